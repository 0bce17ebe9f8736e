"""A team's pictures in a folder by class (dataset=folder): the layout, the modes, the given
splits, the same prepared arrays as the IDX route for the same images, and a one-line refusal
for each way a folder can be wrong."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import MNIST_T10K, Store, synthetic_digits, write_idx_folder, write_pictures
from neuroflow.data.fingerprint import fingerprint
from neuroflow.data.folders import read_picture
from neuroflow.data.framing import InputRule
from neuroflow.data.prepared import prepare
from neuroflow.data.sources import load_source
from neuroflow.errors import DataError
from neuroflow.settings import PrepareConfig

RULE = InputRule(28, "pad")


def prepared_digest(dataset: str, data_dir: Path, tmp_path: Path, **settings) -> dict:
    config = PrepareConfig(dataset=dataset, data_dir=str(data_dir), **settings)
    rule = InputRule.for_source(dataset, config.image_size, config.mnist_framing)
    source = load_source(dataset, str(data_dir), rule)
    return prepare(source, tmp_path / f"prepared-{dataset}", config)


def test_the_same_images_as_pictures_give_the_arrays_and_digests_of_the_idx_route(tmp_path):
    idx = write_idx_folder(tmp_path / "idx")
    train, test = synthetic_digits(300, seed=1), synthetic_digits(100, seed=2)
    pictures = tmp_path / "pictures"
    write_pictures(pictures / "train", *train)
    write_pictures(pictures / "test", *test)
    from_idx = prepared_digest("idx", idx, tmp_path)
    from_pictures = prepared_digest("folder", pictures, tmp_path)
    for split in ("train", "val", "test"):
        assert from_pictures["splits"][split]["sha256"] == from_idx["splits"][split]["sha256"]
    assert from_pictures["digest"] == from_idx["digest"]
    assert from_pictures["classes"] == from_idx["classes"] == [str(d) for d in range(10)]
    assert from_pictures["official_test"] and from_pictures["title"] == "pictures"


@pytest.mark.slow  # 10,000 pictures written twice, three preprocess and train_cnn runs
@pytest.mark.skipif(not MNIST_T10K.exists(), reason="the real MNIST test split is not at hand")
def test_real_mnist_as_pictures_and_as_a_table_trains_as_its_idx_files_do(tmp_path):
    """The MNIST test split written as an ImageFolder of PNGs and as a Parquet table of PNG
    bytes: preprocess gives the digests of its IDX files, and so train_cnn the same metrics."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from neuroflow.data.idx import find_pairs, read_pair

    (pair,) = find_pairs(MNIST_T10K)
    images, labels = (np.asarray(a) for a in read_pair(pair))
    write_pictures(tmp_path / "mnist-t10k", images, labels)
    encoded = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    table = pa.table({"image": encoded, "label": labels.astype(np.int64)})
    pq.write_table(table, tmp_path / "mnist-t10k.parquet", row_group_size=1000)
    (tmp_path / "store").mkdir()
    store = Store(tmp_path / "store")
    routes = {
        "idx": MNIST_T10K,
        "folder": tmp_path / "mnist-t10k",
        "parquet": tmp_path / "mnist-t10k.parquet",
    }
    digests, metrics = {}, {}
    for dataset, data_dir in routes.items():
        prepared = store.step("preprocess", dataset=dataset, data_dir=str(data_dir))
        assert prepared.returncode == 0, prepared.stderr
        digests[dataset] = store.get(prepared.run_id).data.tags["data_digest"]
        trained = store.step("train_cnn", data=prepared.run_id, epochs=1, max_batches=20)
        assert trained.returncode == 0, trained.stderr
        run = store.get(trained.run_id).data.metrics
        metrics[dataset] = {key: run[key] for key in ("test_accuracy", "test_loss", "val_loss")}
    assert digests["folder"] == digests["parquet"] == digests["idx"]
    assert metrics["folder"] == metrics["parquet"] == metrics["idx"]
    print(f"digest {digests['idx']} by all three routes; train_cnn {metrics['idx']}")


def test_class_names_come_from_the_folders_and_given_splits_are_kept(tmp_path):
    names = ["cat", "dog", "owl"]
    images, labels = synthetic_digits(30, classes=3)
    write_pictures(tmp_path / "pets" / "train", images, labels, names)
    write_pictures(tmp_path / "pets" / "val", *synthetic_digits(9, classes=3, seed=5), names)
    meta = prepared_digest("folder", tmp_path / "pets", tmp_path)
    assert meta["classes"] == names and meta["title"] == "pets"
    assert meta["given_val"] and not meta["official_test"]
    counts = {split: info["count"] for split, info in meta["splits"].items()}
    assert counts["val"] == 9 and counts["train"] + counts["test"] == 30  # test by fraction


def test_every_mode_is_read_grey_or_in_colour_by_the_documented_rule(tmp_path):
    grey = np.tile(np.arange(0, 250, 25, dtype=np.uint8), (10, 1))  # (10, 10)
    rgb = np.stack([grey, grey // 2, np.zeros_like(grey)], axis=-1)
    rgba = np.dstack([rgb, np.full_like(grey, 0)])  # see-through: paper
    wide = (grey.astype(np.uint16) << 8) | 0xFF
    written = {
        "l.png": Image.fromarray(grey),
        "rgb.png": Image.fromarray(rgb),
        "rgba.png": Image.fromarray(rgba),
        "p.png": Image.fromarray(rgb).quantize(16),
        "grey-palette.png": Image.fromarray(grey).convert("P"),
        "i16.png": Image.fromarray(wide),
        "bilevel.png": Image.fromarray(grey > 100),
        "la.png": Image.fromarray(np.dstack([grey, np.zeros_like(grey)]), "LA"),
    }
    for name, image in written.items():
        image.save(tmp_path / name)
    read = {name: read_picture(tmp_path / name) for name in written}
    colour = {"rgb.png", "rgba.png", "p.png"}
    assert {name for name, image in read.items() if image.shape == (10, 10, 3)} == colour
    assert all(read[name].shape == (10, 10) for name in set(written) - colour)
    assert all(image.dtype == np.uint8 for image in read.values())
    assert (read["l.png"] == grey).all() and (read["grey-palette.png"] == grey).all()
    assert (read["rgb.png"] == rgb).all()
    assert (read["rgba.png"] == 255).all() and (read["la.png"] == 255).all()  # over white
    assert np.abs(read["p.png"].astype(int) - rgb).max() <= 16  # through a 16-colour palette
    assert (read["i16.png"] == grey).all()  # the top 8 bits
    assert set(np.unique(read["bilevel.png"])) == {0, 255}
    # one channel: colour by its luma, as Pillow computes it; three: grey repeated
    to_grey, to_colour = InputRule(10, "pad", channels=1), InputRule(10, "pad", channels=3)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    assert (to_grey.apply(read["rgb.png"][None])[0] == luma).all()
    assert (to_colour.apply(read["l.png"][None])[0] == grey[..., None]).all()
    assert to_colour.apply(read["l.png"][None]).shape == (1, 10, 10, 3)


def test_pictures_of_any_size_are_fitted_whole_and_padded(tmp_path):
    wide = np.full((20, 40), 200, np.uint8)
    write_pictures(tmp_path / "shapes", np.stack([wide, wide]), np.array([0, 1]))
    source = load_source("folder", str(tmp_path / "shapes"), InputRule(16, "pad"))
    (part,) = source.parts
    image = part.images[np.array([0])][0]  # (16, 16): 40 wide -> 16, 20 high -> 8, centred
    assert image.shape == (16, 16)
    assert (image[4:12] == 200).all() and (image[:4] == 0).all() and (image[12:] == 0).all()


def test_one_picture_changed_changes_the_fingerprint(tmp_path):
    folder = write_pictures(tmp_path / "f", *synthetic_digits(20))
    before = fingerprint("folder", str(folder))
    again = fingerprint("folder", str(folder))
    first = sorted(folder.rglob("*.png"))[0]
    pixels = np.asarray(Image.open(first)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(first)
    assert before == again != fingerprint("folder", str(folder))


def _truncated_jpeg(folder: Path) -> None:
    path = folder / "3" / "broken.jpg"
    Image.fromarray(synthetic_digits(1)[0][0]).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:200])


def _link_outside(folder: Path) -> None:
    outside = write_pictures(folder.parent / "elsewhere", *synthetic_digits(4, classes=2))
    os.symlink(outside / "1", folder / "linked")


BAD_FOLDERS = [
    (lambda f: (f / "empty").mkdir(), "class folder {folder}/empty holds no images"),
    (lambda f: (f / "2" / "notes.txt").write_text("hi"), "notes.txt is not a picture file"),
    (lambda f: (f / "2" / "fake.png").write_text("not a png"), "fake.png cannot be read as"),
    (_truncated_jpeg, "broken.jpg cannot be read as an image"),
    (
        lambda f: Image.fromarray(np.zeros((5, 30), np.uint8)).save(f / "4" / "tiny.png"),
        "tiny.png is 30x5 pixels; expected at least 8x8",
    ),
    (_link_outside, "leads to"),
    (lambda f: (f / "test").mkdir(), "has test/ but no train/"),
]


@pytest.mark.parametrize(("spoil", "message"), BAD_FOLDERS)
def test_a_folder_out_of_its_layout_is_refused_with_one_line(tmp_path, spoil, message):
    folder = write_pictures(tmp_path / "pictures", *synthetic_digits(60))
    spoil(folder)
    with pytest.raises(DataError) as error:
        prepared_digest("folder", folder, tmp_path)
    text = str(error.value)
    assert message.format(folder=folder) in text and "\n" not in text


def test_one_class_or_none_is_refused(tmp_path):
    one = write_pictures(tmp_path / "one", *synthetic_digits(5, classes=1))
    with pytest.raises(DataError, match="has only class '0'; expected a folder per class"):
        load_source("folder", str(one), RULE)
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match="has no class folders"):
        load_source("folder", str(tmp_path / "none"), RULE)
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        load_source("folder", str(tmp_path / "missing"), RULE)


@pytest.mark.slow  # main through the real `mlflow run`, three times
def test_a_users_folder_runs_through_main_and_the_cache_follows_its_pictures(tmp_path):
    """Colour pictures of another size, in JPEG and PNG, in a folder outside the project: main
    with dataset and data_dir alone trains, registers and promotes every family, in colour
    (channels=auto); run again,
    every step is reused; one picture changed, preprocess and every step after it run again."""
    names = ["cat", "dog", "owl"]
    images, labels = synthetic_digits(240, size=36, classes=3)
    pets = tmp_path / "pets"
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        home = pets / names[label]
        home.mkdir(parents=True, exist_ok=True)
        rgb = np.stack([image, image, image // 2], axis=-1)
        Image.fromarray(rgb).save(home / f"{index:04d}.{'png' if index % 2 else 'jpg'}")
    (tmp_path / "store").mkdir()
    store = Store(tmp_path / "store")
    first = store.run("main", dataset="folder", data_dir=str(pets))
    assert first.returncode == 0, first.stderr[-3000:]
    for family in ("mlp", "cnn", "rnn", "dcgan"):
        champion = store.client.get_model_version_by_alias(f"pets_{family}", "champion")
        assert str(champion.version) == "1", family
    trained = store.get(store.client.get_model_version("pets_cnn", "1").run_id)
    assert trained.data.metrics["test_accuracy"] > 0.9
    metadata = store.client.download_artifacts(
        trained.data.params["data_run_id"], "prepared/metadata.json", str(tmp_path)
    )
    assert json.loads(Path(metadata).read_text())["channels"] == 3  # colour: every family

    again = store.run("main", dataset="folder", data_dir=str(pets))
    assert again.returncode == 0 and "python -m steps.preprocess" not in again.stderr
    reused = store.get(again.run_id).data.tags["reused_steps"].split(",")
    assert len(reused) == 13  # every step of the four families

    changed = sorted(pets.rglob("*.png"))[0]
    pixels = np.asarray(Image.open(changed)).copy()
    pixels[0, 0] ^= 1
    Image.fromarray(pixels).save(changed)
    # 48 test images: fewer than promote's default of 100 unseen ones, so main passes it lower
    rerun = store.run("main", dataset="folder", data_dir=str(pets), min_unseen=20)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert store.get(rerun.run_id).data.tags["reused_steps"] == "none"
    for step in ("preprocess", "train_cnn", "register", "promote --model-name=pets_cnn"):
        assert f"python -m steps.{step}" in rerun.stderr, step
    assert "--min-unseen=20" in rerun.stderr
    print(f"pets: {first.stderr.count('succeeded')} runs, then all reused, then all rerun")
