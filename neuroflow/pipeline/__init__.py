"""main: the steps chained with mlflow.run, with a step cache that reuses finished runs."""
