"""What a classifier's run records of its test split, beside the model: the test metrics,
linked to the logged model and the test dataset, and what its model card shows (the confusion
matrix, and the first misclassified test images)."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np

from neuroflow.tracking import plots

# {"classes": [...], "matrix": [...]}, a row per true class, a column per predicted one
MATRIX = "evaluation/confusion_matrix.json"
MISCLASSIFIED = "evaluation/misclassified.npz"  # images, labels, predictions, indices
SHOWN = 16  # misclassified test images kept for the model card


def log_test_results(info, prepared, result, test_dataset) -> None:
    """For the model `info` (a ModelInfo) scored on the test split of `prepared` (`result`, a
    neuroflow.training.classifier.Evaluation)."""
    mlflow.log_metrics(
        {"test_accuracy": result.accuracy, "test_loss": result.loss},
        model_id=info.model_id,
        dataset=test_dataset,
    )
    labels = prepared.labels["test"]
    matrix = plots.confusion_matrix(labels, result.predictions, len(prepared.classes))
    plots.log_confusion_matrix(matrix, prepared.classes)
    mlflow.log_dict({"classes": prepared.classes, "matrix": matrix.tolist()}, MATRIX)
    wrong = np.flatnonzero(result.predictions != labels)[:SHOWN]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(MISCLASSIFIED).name
        np.savez_compressed(
            path,
            images=prepared.images["test"][wrong],
            labels=labels[wrong],
            predictions=result.predictions[wrong],
            indices=wrong,
        )
        mlflow.log_artifact(str(path), str(Path(MISCLASSIFIED).parent))


def evaluate_predictions(labels: np.ndarray, probabilities: np.ndarray, classes, name: str):
    """MLflow's standard classifier evaluation, in its static-predictions form, of a model's
    (N, C) class `probabilities` on test `labels`, in a nested run named `name`: accuracy,
    precision, recall and F1 (weighted, and per class in per_class_metrics.csv), log loss, ROC
    AUC (one class against the rest) and the confusion matrix. Returns the EvaluationResult."""
    import pandas as pd
    from mlflow.models import make_metric

    frame = pd.DataFrame(
        {
            "label": labels.astype(np.int64),
            "prediction": probabilities.argmax(axis=1),
            "probabilities": list(probabilities),  # a column the metrics below read by name
        }
    )
    ids = list(range(len(classes)))
    with mlflow.start_run(nested=True, run_name=name), warnings.catch_warnings():
        # class ids are integers, and there are no missing values to be told about
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer column")
        # a class never predicted has precision 0, as the per-class table shows
        warnings.filterwarnings("ignore", "Precision is ill-defined")
        mlflow.log_dict({"classes": list(classes)}, "classes.json")
        return mlflow.models.evaluate(
            data=frame,
            targets="label",
            predictions="prediction",
            model_type="classifier",
            evaluator_config={"label_list": ids, "log_model_explainability": False},
            extra_metrics=[
                make_metric(eval_fn=_log_loss(ids), greater_is_better=False, name="log_loss"),
                make_metric(eval_fn=_roc_auc(ids), greater_is_better=True, name="roc_auc"),
            ],
        )


# MLflow computes these only from a model's predict_proba; from static predictions, it hands a
# custom metric the column its parameter names.
def _log_loss(ids):
    def log_loss(predictions, targets, probabilities):
        from mlflow.metrics import MetricValue
        from sklearn.metrics import log_loss

        value = log_loss(targets, np.stack(probabilities), labels=ids)
        return MetricValue(aggregate_results={"log_loss": value})

    return log_loss


def _roc_auc(ids):
    def roc_auc(predictions, targets, probabilities):
        from mlflow.metrics import MetricValue
        from sklearn.metrics import roc_auc_score

        if len(np.unique(targets)) < len(ids):
            return None  # undefined for a class with no test image; MLflow then skips it
        scores = np.stack(probabilities)
        value = roc_auc_score(targets, scores, multi_class="ovr", labels=ids)
        return MetricValue(aggregate_results={"roc_auc": value})

    return roc_auc
