"""neuroflow: data, models, training loops and MLflow lifecycle logic behind the MLproject steps.

Importing the package is cheap; torch and mlflow are imported by the modules that need them.
"""
