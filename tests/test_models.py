"""The classifier families: shapes in and out, normalisation, rebuilding from a stored config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from neuroflow.families import CLASSIFIERS, RNN_CELLS, CNNConfig, MLPConfig, RNNConfig
from neuroflow.models.build import build_classifier
from neuroflow.models.classifier import ImageClassifier, Standardize
from neuroflow.settings import MODELS

MEAN, STD = 0.1307, 0.3081  # MNIST's pixel statistics, as preprocessing measures them
CLASSES = list(range(10))
SMALL = {  # narrow enough that every test builds in milliseconds
    "mlp": MLPConfig(hidden=(32, 16)),
    "cnn": CNNConfig(channels=(4, 8), hidden=24),
    "rnn": RNNConfig(hidden_size=12),
}
FEATURE_WIDTH = {"mlp": 16, "cnn": 24, "rnn": 12}  # the width of the penultimate layer


def small_classifier(family: str, image_shape=(28, 28)) -> ImageClassifier:
    torch.manual_seed(0)
    return build_classifier(family, SMALL[family], image_shape, MEAN, STD, CLASSES).eval()


def raw_pixels(batch: int, image_shape=(28, 28)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (batch, *image_shape), generator=generator, dtype=torch.uint8)


def as_layout(pixels: torch.Tensor, layout: str) -> torch.Tensor:
    """(B, H, W) pixels reshaped to one of the layouts a caller may pass."""
    batch, height, width = pixels.shape
    return {
        "BHW": pixels,
        "BF": pixels.reshape(batch, height * width),
        "B1HW": pixels.reshape(batch, 1, height, width),
    }[layout]


def test_every_family_has_a_small_config():
    assert set(SMALL) == set(CLASSIFIERS)
    for family in CLASSIFIERS:
        assert isinstance(SMALL[family], MODELS[family])


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
@pytest.mark.parametrize("layout", ["BHW", "BF", "B1HW"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_logits_and_class_ids_for_every_layout_and_dtype(family, layout, dtype):
    model = small_classifier(family)
    pixels = raw_pixels(5)
    x = as_layout(pixels, layout).to(dtype)
    with torch.no_grad():
        logits = model.logits(x)
        ids = model(x)
        reference = model.logits(pixels)  # the same pixels as (B, H, W) uint8
    assert isinstance(model, ImageClassifier)
    assert logits.shape == (5, len(CLASSES))
    assert logits.dtype == torch.float32
    assert ids.shape == (5,)
    assert ids.dtype == torch.int64
    assert torch.equal(ids, logits.argmax(dim=1))
    assert ((ids >= 0) & (ids < len(CLASSES))).all()
    torch.testing.assert_close(logits, reference)  # layout and dtype change nothing


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_features_have_the_penultimate_width(family):
    model = small_classifier(family)
    with torch.no_grad():
        features = model.features(raw_pixels(3))
    assert features.shape == (3, FEATURE_WIDTH[family])


def test_default_configs_give_the_documented_feature_widths():
    torch.manual_seed(0)
    mlp = build_classifier("mlp", MLPConfig(), (28, 28), MEAN, STD, CLASSES).eval()
    cnn = build_classifier("cnn", CNNConfig(), (28, 28), MEAN, STD, CLASSES).eval()
    with torch.no_grad():
        assert mlp.features(raw_pixels(2)).shape == (2, MLPConfig().hidden[-1])
        assert cnn.features(raw_pixels(2)).shape == (2, CNNConfig().hidden)


def test_standardize_scales_raw_pixels_with_mean_and_std():
    pixels = np.array([[0, 255, 128, 64], [1, 2, 200, 30]], dtype=np.uint8)  # (B, H*W), 2x2
    standardize = Standardize((2, 2), MEAN, STD)
    out = standardize(torch.from_numpy(pixels))
    expected = (pixels.astype(np.float64) / 255 - MEAN) / STD
    assert out.shape == (2, 1, 2, 2)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy().reshape(2, 4), expected, rtol=1e-5, atol=1e-6)
    assert out[0, 0, 0, 0].item() == pytest.approx(-MEAN / STD, rel=1e-5)
    assert out[0, 0, 0, 1].item() == pytest.approx((1 - MEAN) / STD, rel=1e-5)


def test_standardize_keeps_mean_and_std_in_the_state_dict():
    state = Standardize((28, 28), MEAN, STD).state_dict()
    assert state["mean"].item() == pytest.approx(MEAN)
    assert state["std"].item() == pytest.approx(STD)


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
def test_config_stored_on_the_module_rebuilds_the_same_architecture(family):
    model = small_classifier(family)
    stored = json.loads(json.dumps(model.config))  # as a logged model keeps it: lists, not tuples
    assert family == "rnn" or any(isinstance(value, list) for value in stored.values())
    rebuilt = build_classifier(family, stored, (28, 28), MEAN, STD, CLASSES)
    assert rebuilt.family == model.family == family
    assert rebuilt.config == model.config
    assert rebuilt.classes == CLASSES
    original, copy = model.state_dict(), rebuilt.state_dict()
    assert list(copy) == list(original)
    assert {k: v.shape for k, v in copy.items()} == {k: v.shape for k, v in original.items()}
    rebuilt.load_state_dict(original)  # the weights of one load into the other
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.logits(raw_pixels(4)), model.logits(raw_pixels(4)))


@pytest.mark.parametrize(("image_shape", "blocks"), [((28, 28), 6), ((16, 16), 5)])
def test_cnn_with_more_blocks_than_the_image_allows_is_refused(image_shape, blocks):
    config = CNNConfig(channels=(2,) * blocks, hidden=8)  # 28 -> 14 -> 7 -> 4 -> 2 -> 1 -> ?
    with pytest.raises(ValueError, match=f"{blocks} stride-2 blocks shrink .* to 1x1"):
        build_classifier("cnn", config, image_shape, MEAN, STD, CLASSES)


def test_cnn_with_as_many_blocks_as_fit_is_built():
    config = CNNConfig(channels=(2,) * 4, hidden=8)  # 16 -> 8 -> 4 -> 2 -> 1
    model = build_classifier("cnn", config, (16, 16), MEAN, STD, CLASSES).eval()
    with torch.no_grad():
        assert model.logits(raw_pixels(2, (16, 16))).shape == (2, 10)


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
@pytest.mark.parametrize("image_shape", [(16, 16), (12, 20)])
@pytest.mark.parametrize("layout", ["BHW", "BF", "B1HW"])
def test_images_of_other_sizes(family, image_shape, layout):
    classes = ["a", "b", "c"]
    torch.manual_seed(0)
    model = build_classifier(family, SMALL[family], image_shape, MEAN, STD, classes).eval()
    x = as_layout(raw_pixels(4, image_shape), layout)
    with torch.no_grad():
        assert model.logits(x).shape == (4, 3)
        assert model(x).shape == (4,)
        assert model.features(x).shape == (4, FEATURE_WIDTH[family])
    assert model.classes == classes


@pytest.mark.parametrize("cell", RNN_CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_reads_one_row_per_step(cell, bidirectional):
    config = RNNConfig(cell=cell, hidden_size=10, num_layers=2, bidirectional=bidirectional)
    model = build_classifier("rnn", config, (20, 12), MEAN, STD, CLASSES).eval()
    assert model.net.rnn.input_size == 12  # a row of 12 pixels per step
    with torch.no_grad():
        features = model.features(raw_pixels(3, (20, 12)))
    assert features.shape == (3, 20 if bidirectional else 10)


def test_rnn_output_depends_on_the_first_row():
    """The last step's state must carry what the first row showed."""
    model = small_classifier("rnn")
    pixels = raw_pixels(2)
    changed = pixels.clone()
    changed[:, 0] = 255 - changed[:, 0]
    with torch.no_grad():
        assert not torch.allclose(model.logits(pixels), model.logits(changed))


def test_unknown_rnn_cell_is_refused():
    # by the config, before any network is built
    with pytest.raises(ValueError, match="RNNConfig.cell: 'transformer' is not one of 'lstm'"):
        build_classifier("rnn", RNNConfig(cell="transformer"), (28, 28), MEAN, STD, CLASSES)


@pytest.mark.parametrize("family", sorted(CLASSIFIERS))
@pytest.mark.parametrize("size", [32, 64])
def test_every_family_takes_colour_channels_last_at_any_size(family, size):
    torch.manual_seed(0)
    model = build_classifier(family, SMALL[family], (size, size), MEAN, STD, CLASSES, channels=3)
    model.eval()
    pixels = raw_pixels(3, (size, size, 3))
    with torch.no_grad():
        logits = model.logits(pixels)
        assert logits.shape == (3, 10) and model(pixels.float()).shape == (3,)
        torch.testing.assert_close(model.logits(pixels.reshape(3, -1)), logits)  # flattened
        # each channel counts: the same pixels with red and blue swapped read differently
        assert not torch.allclose(model.logits(pixels.flip(-1)), logits)
    assert model.standardize.pixel_shape == (size, size, 3)


@pytest.mark.parametrize(("size", "blocks"), [(28, 2), (32, 2), (64, 3), (256, 5)])
def test_the_cnn_adds_blocks_as_the_image_grows(size, blocks):
    model = build_classifier("cnn", SMALL["cnn"], (size, size), MEAN, STD, CLASSES, channels=3)
    convs = [m for m in model.net.conv if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == blocks and convs[0].in_channels == 3
    assert [c.out_channels for c in convs] == [4, 8] + [8] * (blocks - 2)


def test_the_rnn_reads_each_row_in_every_channel():
    model = build_classifier("rnn", SMALL["rnn"], (20, 12), MEAN, STD, CLASSES, channels=3)
    assert model.net.rnn.input_size == 36  # 12 pixels of 3 channels per step


def test_a_colour_classifier_is_rebuilt_from_its_description():
    from neuroflow.models.build import describe, rebuild

    torch.manual_seed(0)
    model = build_classifier("cnn", SMALL["cnn"], (32, 32), MEAN, STD, CLASSES, channels=3)
    spec = json.loads(json.dumps(describe(model)))
    assert spec["channels"] == 3 and spec["image_shape"] == [32, 32]
    rebuilt = rebuild(spec)
    rebuilt.load_state_dict(model.state_dict())
    pixels = raw_pixels(2, (32, 32, 3))
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval().logits(pixels), model.eval().logits(pixels))
