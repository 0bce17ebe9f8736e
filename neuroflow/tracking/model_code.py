"""What MLflow runs to load any model this project logs (MLflow's models-from-code). The
network is rebuilt from its spec and its weights are read as tensors only: see
neuroflow.tracking.networks."""

import mlflow

from neuroflow.tracking.networks import NetworkModel

mlflow.models.set_model(NetworkModel())
