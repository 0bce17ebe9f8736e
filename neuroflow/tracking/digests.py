"""Digests of a logged model's files, so that a model changed in the store is refused before
any of its code is imported or its weights read.

A model's manifest lists every file of it (MLmodel, model_code.py, the code/ package,
spec.json, weights.pt, the requirements and environment files, the input examples) with its
sha256, in the format `sha256sum -c` checks. The manifest's own sha256 is the model's digest.

- Training records both when it logs a model: the digest as the `model_digest` tag of its run
  and of the logged model, the manifest as the run's artifact model_files.sha256, which the
  `model_manifest` tag names.
- register checks the model against them and records both again on the version.
- Every load (the project's own loader, promote, predict, the DCGAN's evaluator) resolves what
  was recorded for the URI first, downloads the model, and checks its files before anything
  else reads them. A changed file is named by comparing against the recorded manifest.

    python -m neuroflow.tracking.digests models:/digits_cnn@champion ./champion

downloads a model, checks it, and leaves the checked copy to serve with `mlflow models serve`.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import click

from neuroflow.errors import NeuroflowError

MANIFEST = "model_files.sha256"  # the artifact of the run that logged or registered a model
DIGEST_TAG, MANIFEST_TAG = "model_digest", "model_manifest"
# MLflow writes this file beside every models:/ download, on the caller's side, over any copy
# in the store: it names the version downloaded and is never part of what was logged.
WRITTEN_AT_DOWNLOAD = "registered_model_meta"
LOGGED_MODEL_ID = "m-"  # how MLflow begins a logged model's id
CHUNK = 1 << 20


class ModelFilesError(NeuroflowError):
    """A model whose files are not those recorded when it was logged or registered."""


def manifest(folder: Path) -> str:
    """Every file under `folder` with its sha256, a line each, sorted by path: the text of a
    SHA256SUMS file (`sha256sum -c` checks it from inside the folder)."""
    lines = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_dir() or relative == WRITTEN_AT_DOWNLOAD:
            continue
        lines.append(f"{file_sha256(path)}  {relative}\n")
    return "".join(lines)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def digest_of(manifest_text: str) -> str:
    return hashlib.sha256(manifest_text.encode()).hexdigest()


def parse(manifest_text: str) -> dict[str, str]:
    """{path: sha256} of a manifest."""
    return {
        path: sha
        for sha, _, path in (line.partition("  ") for line in manifest_text.splitlines())
        if path
    }


@dataclass(frozen=True)
class Recorded:
    """What was recorded for a model URI when its model was logged or registered."""

    uri: str  # what to download: an alias resolved to the version it names now
    when: str  # when it was recorded: "it was logged", "it was registered as version 3 of 'x'"
    digest: str
    manifest_uri: str
    name: str = ""  # the registered model and version, where the URI names one
    version: str = ""


def record(model_info, manifest_text: str) -> dict[str, str]:
    """In the active run, which has just logged `model_info`, whose files `manifest_text`
    lists: log it, and tag the run and the logged model with its digest. Returns the tags."""
    import mlflow

    tags = log_manifest(manifest_text)
    mlflow.set_tags(tags)
    mlflow.set_logged_model_tags(model_info.model_id, tags)
    return tags


def record_on_version(client, version, manifest_text: str) -> dict[str, str]:
    """In the active (register) run: log `manifest_text` and tag model `version` with it."""
    tags = log_manifest(manifest_text)
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)
    return tags


def log_manifest(manifest_text: str) -> dict[str, str]:
    """`manifest_text` as the active run's MANIFEST; the tags that record it."""
    import mlflow

    run_id = mlflow.active_run().info.run_id
    mlflow.log_text(manifest_text, MANIFEST)
    return {DIGEST_TAG: digest_of(manifest_text), MANIFEST_TAG: f"runs:/{run_id}/{MANIFEST}"}


def recorded(uri: str) -> Recorded:
    """What was recorded for the model at `uri`: models:/<name>/<version>,
    models:/<name>@<alias>, models:/<logged model id> or runs:/<run id>/model. A URI of
    another form, one that names nothing, or a model with nothing recorded raises a one-line
    ModelFilesError or MlflowException."""
    import mlflow
    from mlflow import MlflowClient

    from neuroflow.tracking.models import MODEL_NAME

    client = MlflowClient()
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        if path.strip("/") != MODEL_NAME:
            raise ModelFilesError(f"it names {path!r} of a run, not the run's {MODEL_NAME!r}")
        tags = client.get_run(run_id).data.tags
        return _recorded(uri, "it was logged", tags)
    if not uri.startswith("models:/") or uri.startswith("models://"):
        raise ModelFilesError(
            "expected models:/<name>/<version>, models:/<name>@<alias>, "
            "models:/<logged model id> or runs:/<run id>/model"
        )
    name = uri.removeprefix("models:/").rstrip("/")
    if "@" in name:
        name, alias = name.split("@", 1)
        version = client.get_model_version_by_alias(name, alias)
    elif "/" in name:
        name, number = name.rsplit("/", 1)
        if not number.isdigit():
            raise ModelFilesError(f"{number!r} is not a version number (stages are not used)")
        version = client.get_model_version(name, number)
    elif name.startswith(LOGGED_MODEL_ID):  # a logged model's own id
        logged = mlflow.get_logged_model(name)
        return _recorded(uri, "it was logged", logged.tags)
    else:
        raise ModelFilesError(f"it names registered model {name!r} with no version or alias")
    when = f"it was registered as version {version.version} of {version.name!r}"
    pinned = f"models:/{version.name}/{version.version}"
    return _recorded(pinned, when, version.tags, version.name, str(version.version))


def _recorded(uri: str, when: str, tags: dict, name: str = "", version: str = "") -> Recorded:
    if DIGEST_TAG not in tags or MANIFEST_TAG not in tags:
        raise ModelFilesError(
            f"nothing recorded the digests of its files when {when} (no {DIGEST_TAG} tag): "
            "this project's training did not log it, or logged it before models were digested "
            "(retrain it)"
        )
    return Recorded(uri, when, tags[DIGEST_TAG], tags[MANIFEST_TAG], name, version)


def verify(folder: Path, expected: Recorded) -> str:
    """Check the model downloaded to `folder` against `expected`. Returns its manifest; a
    one-line ModelFilesError naming the first changed, added or missing file otherwise."""
    text = manifest(folder)
    if digest_of(text) != expected.digest:
        raise ModelFilesError(difference(parse(text), expected))
    return text


def difference(found: dict[str, str], expected: Recorded) -> str:
    """What differs between the files `found` and those recorded in `expected`'s manifest."""
    import mlflow
    from mlflow.exceptions import MlflowException

    since = f"since {expected.when}"
    try:
        text = mlflow.artifacts.load_text(expected.manifest_uri)
    except MlflowException:
        return f"its files changed {since}, and its manifest {expected.manifest_uri} is gone"
    if digest_of(text) != expected.digest:
        return f"its files changed {since}, and so did its manifest {expected.manifest_uri}"
    listed = parse(text)
    for path in sorted(found.keys() | listed.keys()):
        if path not in listed:
            return f"its file {path} was added {since}"
        if path not in found:
            return f"its file {path} is missing {since}"
        if found[path] != listed[path]:
            return (
                f"its file {path} changed {since} (sha256 {found[path][:12]}, "
                f"recorded {listed[path][:12]})"
            )
    return f"its files changed {since}"  # only a manifest line's form could differ


@click.command()
@click.argument("uri")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def fetch(uri: str, folder: Path):
    """Download the model at URI into FOLDER (new or empty) and check every file of it against
    the digest recorded when it was logged or registered. Serve the checked copy with
    `mlflow models serve -m FOLDER`."""
    from neuroflow.tracking.models import fetch_model

    if folder.exists() and any(folder.iterdir()):
        raise click.BadParameter(f"{str(folder)!r} is not empty; expected a new or empty folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:  # beside it: a rename, no copy
        fetched = fetch_model(uri, Path(tmp) / "model", "model", "a model URI")
        if folder.exists():
            folder.rmdir()
        fetched.folder.replace(folder)
    recorded = fetched.recorded
    click.echo(f"{folder}: every file of {uri} as when {recorded.when} ({recorded.digest})")


if __name__ == "__main__":
    from neuroflow import cli

    cli.run(fetch)
