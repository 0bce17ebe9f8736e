"""Training loops and evaluation. No MLflow here: progress is reported through callbacks."""
