"""MLflow glue: finding runs, lineage, and logging plots and models."""
