"""model_card.html: one self-contained page per registered version, the page a reviewer opens
before approving a champion. It shows where the model came from (commit -> preprocess run ->
training run -> version, with digests), its parameters and final metrics, its curves, its
confusion matrix and per-class accuracy and misclassified test images (a classifier's), or its
samples and score curves (the DCGAN's). Every image is inlined and a Content-Security-Policy
forbids every fetch, so the page opens anywhere, MLflow's artifact view included, and asks
nothing of the network. Built from what the training run logged: no torch."""

from __future__ import annotations

import base64
import html
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np
from mlflow import MlflowClient

from neuroflow.tracking.evaluation import MATRIX, MISCLASSIFIED

CARD = "model_card.html"  # the register run's artifact
# The training run's pictures, in the order shown, where it logged them.
PICTURES = {
    "plots/loss_curve.png": "Loss curves",
    "plots/optimization_history.png": "Search history (tune)",
    "plots/gan_curves.png": "Losses, FID and class coverage",
    "samples/final.png": "Samples from fixed latents",
    "plots/confusion_matrix.png": "Confusion matrix on the test split",
}
NO_FETCH = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


@dataclass
class Card:
    """What a card shows, gathered before the version exists (see gather)."""

    run: object  # the training (or tune) run
    data_run: object  # its preprocess run
    model_uri: str
    weights_digest: str  # sha256 of the network's weights.pt
    pictures: dict[str, str] = field(default_factory=dict)  # title -> PNG data URI
    per_class: list[tuple[str, int, float]] = field(default_factory=list)  # class, count, acc
    # (PNG data URI, true class, predicted class, index in the test split)
    misclassified: list[tuple[str, str, str, int]] = field(default_factory=list)


def gather(run, data_run, model_uri: str, weights_digest: str) -> Card:
    card = Card(run, data_run, model_uri, weights_digest)
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        logged = _listing(run_id)
        for path, title in PICTURES.items():
            if path in logged:
                local = mlflow.artifacts.download_artifacts(
                    run_id=run_id, artifact_path=path, dst_path=tmp
                )
                card.pictures[title] = _data_uri(Path(local).read_bytes())
        if MATRIX in logged:
            saved = mlflow.artifacts.load_dict(f"runs:/{run_id}/{MATRIX}")
            matrix = np.asarray(saved["matrix"])
            counts = matrix.sum(axis=1)
            card.per_class = [
                (name, int(n), float(matrix[i, i] / n) if n else float("nan"))
                for i, (name, n) in enumerate(zip(saved["classes"], counts, strict=True))
            ]
        if MISCLASSIFIED in logged:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=MISCLASSIFIED, dst_path=tmp
            )
            card.misclassified = _misclassified(local, card.per_class)
    return card


def _listing(run_id: str) -> set[str]:
    client, paths = MlflowClient(), set()
    for folder in {Path(p).parent.as_posix() for p in (*PICTURES, MATRIX, MISCLASSIFIED)}:
        paths.update(f.path for f in client.list_artifacts(run_id, folder))
    return paths


def _misclassified(path: str, per_class) -> list[tuple[str, str, str, int]]:
    from matplotlib.image import imsave

    names = [name for name, _, _ in per_class]

    def name(i) -> str:
        return names[i] if i < len(names) else str(i)

    with np.load(path, allow_pickle=False) as saved:
        shown = []
        for image, label, predicted, index in zip(
            saved["images"], saved["labels"], saved["predictions"], saved["indices"], strict=True
        ):
            buffer = io.BytesIO()
            imsave(buffer, image, cmap="gray", vmin=0, vmax=255, format="png")
            shown.append((_data_uri(buffer.getvalue()), name(label), name(predicted), int(index)))
    return shown


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render(card: Card, version, register_run_id: str) -> str:
    run, data_run = card.run, card.data_run
    tags, params = run.data.tags, run.data.params
    e = html.escape
    commit = tags.get("git_commit", "") or "(not in git)"
    dirty = " with uncommitted changes" if tags.get("git_dirty") == "true" else ""
    lineage = [
        ("commit", f"{commit}{dirty}", f"code digest {tags.get('code_digest', '?')}"),
        (
            "preprocess run",
            data_run.info.run_id,
            f"{data_run.data.params.get('dataset', '?')}, data digest "
            f"{data_run.data.tags.get('data_digest', '?')}",
        ),
        (
            f"{tags.get('step', 'training')} run",
            f"{run.info.run_id} ({run.info.run_name})",
            f"trained on data digest {params.get('data_digest', '?')}",
        ),
        (
            "registered version",
            f"{version.name} version {version.version}",
            f"model {card.model_uri}, weights sha256 {card.weights_digest}",
        ),
    ]
    metrics = run.data.metrics
    system = {k.removeprefix("system/"): v for k, v in metrics.items() if k.startswith("system/")}
    scores = {k: v for k, v in metrics.items() if not k.startswith("system/")}
    parts = [
        f"<h1>{e(version.name)} <small>version {e(str(version.version))}</small></h1>",
        f"<p>{e(tags.get('family', '?'))}, registered by run {e(register_run_id)}.</p>",
        "<h2>Lineage</h2><ol class=chain>",
        *(f"<li><b>{e(a)}</b> {e(b)}<br><span>{e(c)}</span></li>" for a, b, c in lineage),
        "</ol>",
        "<div class=row><div><h2>Final metrics</h2>",
        _table(("metric", "value"), [(k, f"{v:.4f}") for k, v in sorted(scores.items())]),
        "<h2>System, last sample</h2>",
        _table(("metric", "value"), [(k, f"{v:.1f}") for k, v in sorted(system.items())]),
        "</div><div><h2>Parameters</h2>",
        _table(("parameter", "value"), sorted(params.items())),
        "</div></div>",
    ]
    for path, title in PICTURES.items():
        if title in card.pictures:  # a grid of samples is drawn a pixel a pixel: enlarge it
            kind = "pixels" if path.startswith("samples/") else "plot"
            uri = card.pictures[title]
            parts.append(f"<h2>{e(title)}</h2><img class={kind} alt='{e(title)}' src='{uri}'>")
    if card.per_class:
        rows = [(name, str(n), f"{acc:.3f}") for name, n, acc in card.per_class]
        parts += ["<h2>Per-class accuracy</h2>", _table(("class", "test images", "accuracy"), rows)]
    if card.misclassified:
        count = len(card.misclassified)
        parts.append(f"<h2>{count} misclassified test images</h2><div class=grid>")
        for uri, true, predicted, index in card.misclassified:
            parts.append(
                f"<figure><img alt='test image {index}' src='{uri}'>"
                f"<figcaption>true {e(true)}, predicted {e(predicted)}</figcaption></figure>"
            )
        parts.append("</div>")
    title = e(f"{version.name} v{version.version}")
    return PAGE.format(policy=NO_FETCH, title=title, body="\n".join(parts))


def _table(header: tuple[str, ...], rows) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def log_card(card: Card, version) -> None:
    """Log the card of `version` to the active run, as CARD."""
    mlflow.log_text(render(card, version, mlflow.active_run().info.run_id), CARD)


def card_uri(run) -> str:
    return f"runs:/{run.info.run_id}/{CARD}"


def link(run) -> str:
    """Markdown linking to the card `run` logged, in MLflow's UI and as an artifact URI."""
    where = f"#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}/artifactPath/{CARD}"
    return f"[Model card]({where}) (`{card_uri(run)}`)"


PAGE = """<!doctype html>
<html lang=en><head><meta charset=utf-8>
<meta http-equiv=Content-Security-Policy content="{policy}">
<title>Model card: {title}</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222 }}
h1 small {{ color: #666; font-weight: normal }}
table {{ border-collapse: collapse; margin: .5em 0 }}
td, th {{ border: 1px solid #ccc; padding: .2em .6em; text-align: left }}
ol.chain li {{ margin: .3em 0 }} ol.chain span {{ color: #666; font-size: 90% }}
img.plot {{ max-width: 100% }}
img.pixels {{ width: 480px; image-rendering: pixelated }}
.row {{ display: flex; gap: 3em; align-items: flex-start }}
.grid {{ display: grid; grid-template-columns: repeat(8, 1fr); gap: .5em }}
.grid img {{ width: 84px; image-rendering: pixelated }}
figure {{ margin: 0 }} figcaption {{ font-size: 80% }}
</style></head>
<body>
{body}
</body></html>
"""
