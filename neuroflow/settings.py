"""Every setting of every entry point, declared once: name, type, default, range or choices, help.

Each entry point's options are the settings of the configs its step names, in this order:

    preprocess    PrepareConfig
    train_mlp     Inputs, TRAINING["mlp"] (a TrainConfig), MODELS["mlp"] (MLPConfig)
    train_cnn     Inputs, TRAINING["cnn"], MODELS["cnn"]
    train_rnn     Inputs, TRAINING["rnn"], MODELS["rnn"]
    train_dcgan   GANInputs, GANTrainConfig, MODELS["dcgan"]
    tune          TuneConfig (each trial: the family's TrainConfig and model config)
    register      RegisterConfig
    promote       PromoteConfig
    main          PipelineConfig
    predict       PredictConfig

A model family's config is declared with its registration, in neuroflow.families; every table
here keyed by a family's name (MODELS, TRAINING, SPACES) is derived from the registrations. The
MLproject is generated from the steps' options (`make mlproject`; tests/test_project.py fails
when it drifts). A config checks its own values (see neuroflow.config), so `TrainConfig(lr=-1)`
fails as `--lr=-1` does.
Nothing here imports torch or mlflow.
"""

from __future__ import annotations

from neuroflow import families
from neuroflow.config import Checked, Setting, config, setting
from neuroflow.data.framing import FITS
from neuroflow.data.shards import CACHE_DIR, CACHE_MB
from neuroflow.data.sources import DATASETS
from neuroflow.families import metric_for, registered
from neuroflow.uris import RUN_ID, check_data_value


def optional_run_id(value: str) -> str:
    if value and not RUN_ID.match(value):
        raise ValueError(f"{value!r} is not a 32-character run id")
    return value


# --- preprocess -----------------------------------------------------------------------------

DATASET = Setting("digits", choices=DATASETS, help="digits is bundled with scikit-learn: offline")
DATA_DIR = Setting(
    "~/.cache/neuroflow/datasets",
    help="for dataset=idx, a folder or a .zip, .tar, .tar.gz or .tgz archive of IDX files; "
    "for dataset=folder, a folder of pictures by class (<class>/<image>, or train/, val/ and "
    "test/ of them); for dataset=parquet, a Parquet file or a folder of them; for dataset=delta, "
    "a Delta table's folder; for dataset=table, a table's name (<catalog>.<schema>.<table>), read "
    "through Spark; for the MNIST family, where it is downloaded to and read from",
)
FRACTION = Setting(low=0, high=1, low_open=True, high_open=True)  # strictly between 0 and 1
IMAGE_COLUMN = Setting(
    "image",
    help="for dataset=parquet, delta and table: the column of pictures (a picture file's bytes, "
    "or its pixel values)",
)
LABEL_COLUMN = Setting(
    "label", help="for dataset=parquet, delta and table: the column of classes (ids or names)"
)
CATALOG = Setting("", help="Unity Catalog catalog (registry URI databricks-uc)")
SCHEMA = Setting("", help="Unity Catalog schema (registry URI databricks-uc)")


@config
class SourceConfig(Checked):
    """Which images: what preprocess reads, and main hands it."""

    dataset: str = DATASET.field()
    data_dir: str = DATA_DIR.field()
    image_column: str = IMAGE_COLUMN.field()
    label_column: str = LABEL_COLUMN.field()
    image_size: int = setting(
        28, low=8, high=256, help="the side of the square images every model takes"
    )
    channels: str = setting(
        "auto",
        choices=("auto", "1", "3"),
        help="1: grey; 3: colour (red, green, blue); auto: colour when any picture is",
    )
    fit: str = setting(
        "pad",
        choices=FITS,
        help="for dataset=folder, parquet and delta: pad fits each picture whole into the square "
        "on black; crop fills the square and cuts what is over about the centre",
    )


@config
class PrepareConfig(SourceConfig):
    val_fraction: float = FRACTION.field(
        0.1, help="share of the training pool held out for validation and early stopping"
    )
    test_fraction: float = FRACTION.field(
        0.2, help="share held out for testing, when the source has no official test split"
    )
    seed: int = setting(0, low=0, help="the split's seed")
    # a CNN trained on the digits reads 22.6% of real MNIST when they are stretched to the frame
    mnist_framing: bool = setting(
        True,
        help="digits: crop each to its ink, fit it to 20 of 28 pixels and centre its centre of "
        "mass, as MNIST was made; false stretches the 8x8 image to fill the frame",
    )
    shard_mb: float = setting(
        16.0,
        low=0,
        low_open=True,
        high=4096,
        help="each split's images are written in shards of about this many MiB, which training "
        "reads one at a time",
    )

    def check(self) -> None:
        held_out = self.val_fraction + self.test_fraction
        if held_out >= 1:
            self.refuse(
                ("val_fraction", "test_fraction"),
                f"val_fraction + test_fraction = {held_out:g}; expected less than 1 so the "
                "train split keeps images",
            )


# --- what a training step reads, and where it starts ----------------------------------------


@config
class Inputs(Checked):
    data: str = setting(
        "latest",
        check=check_data_value,
        help="preprocess run id, runs:/<run id>/prepared, or latest",
    )
    resume_from: str = setting(
        "",
        check=optional_run_id,
        help="run id of a FAILED or KILLED run to go on from, at its last checkpoint",
    )
    resume: bool = setting(
        False, help="go on from the newest FAILED or KILLED run with the same parameters, if any"
    )


@config
class GANInputs(Inputs):
    evaluator: str = setting(
        "",
        help="model URI of the classifier that judges samples; empty: the dataset's registered "
        "CNN champion, else a quick CNN trained now",
    )


# --- the training loops ---------------------------------------------------------------------

OPTIMIZERS = ("adamw", "adam", "sgd")
DEVICES = ("auto", "cpu", "cuda")
GAN_LOSSES = ("bce", "wgan-gp")
PRECISIONS = ("fp32", "bf16")
AUGMENT = ("auto", "true", "colour", "false")
LOADINGS = ("auto", "memory", "stream")
STREAM_ABOVE_MB = 1024  # loading=auto streams prepared images larger than this


@config
class LoopConfig(Checked):
    """What both training loops take, with the same defaults: the seed, where they run, and a
    cap on batches for a smoke run."""

    seed: int = setting(0, low=0, help="model initialisation, dropout and shuffling")
    device: str = setting("auto", choices=DEVICES, help="auto picks CUDA when present")
    max_batches: int = setting(
        0, low=0, help="train batches per epoch; 0 = all (a small number makes a smoke run)"
    )
    nproc: int = setting(
        1,
        low=1,
        high=64,
        help="processes, one per device; more than 1 trains data-parallel under torchrun",
    )
    loading: str = setting(
        "auto",
        choices=LOADINGS,
        help="memory: read the prepared splits whole; stream: a shard at a time, so the data "
        f"may exceed memory; auto: stream when the images exceed {STREAM_ABOVE_MB} MiB",
    )
    shuffle_mb: float = setting(
        64.0,
        low=0,
        low_open=True,
        help="each epoch shuffles the shards' order, then the images of this many MiB of "
        "shards at a time; a split no larger is shuffled whole",
    )
    cache_mb: float = setting(
        float(CACHE_MB),
        low=0,
        low_open=True,
        help="disk kept for shards fetched from a remote artifact store, in cache_dir (the "
        "least recently used go first)",
    )
    cache_dir: str = setting(CACHE_DIR, help="where shards fetched from a remote store are kept")


@config
class TrainConfig(LoopConfig):
    """The classifier loop (neuroflow.training.classifier)."""

    epochs: int = setting(10, low=1, help="at most this many epochs (see patience)")
    batch_size: int = setting(128, low=1, help="images per optimizer step, over all processes")
    lr: float = setting(  # used in training/classifier.py: make_optimizer and OneCycleLR
        3e-3, low=0, low_open=True, help="peak learning rate of the one-cycle schedule"
    )
    optimizer: str = setting("adamw", choices=OPTIMIZERS, help="sgd: Nesterov momentum 0.9")
    weight_decay: float = setting(1e-4, low=0, help="decoupled for adamw, L2 otherwise")
    patience: int = setting(
        3, low=0, help="epochs without a lower val_loss before stopping; 0 never stops early"
    )
    grad_clip: float = setting(0.0, low=0, help="clip the gradient norm to this; 0 = no clipping")
    # On the digits (1,797 images drawn at 8x8) it lifts the CNN's reading of real MNIST from
    # 41% to 61% at the same digits accuracy (3 seeds); the MLP and LSTM gain 4 and 3 points
    # there for 1-2 points lost on their own test split, so for them it is off by default.
    augment: str = setting(
        "false",
        choices=AUGMENT,
        help="turn, scale and shift each training image a little, at random; colour: also "
        "shuffle its channels and invert it, for classes colour does not tell apart; auto: "
        "for the digits dataset only",
    )
    precision: str = setting(  # bf16 pays on GPUs with bf16 units; most CPUs emulate it slowly
        "fp32", choices=PRECISIONS, help="bf16: the forward pass autocast to bfloat16"
    )
    # compiling takes about a minute; it pays back on long GPU runs, not on 10 CPU epochs
    compile: bool = setting(False, help="torch.compile the network before training")
    checkpoint_every: int = setting(
        0,
        low=0,
        help="also checkpoint every this many batches within an epoch, so a resumed run goes "
        "on from there; 0: at each epoch's end only",
    )


@config
class GANTrainConfig(LoopConfig):
    """The GAN loop (neuroflow.training.gan)."""

    loss: str = setting(
        "bce", choices=GAN_LOSSES, help="bce: the non-saturating GAN loss; wgan-gp: Wasserstein"
    )
    # 800 generator steps on the 1,259 default digits. At lr 1.6e-3 they reach FID 34-40 (seeds 0
    # and 1) in 25-35 s, where 2e-4 needed 50 epochs for 43; 8e-4 gave 39-42, 3.2e-3 36. Decaying
    # the lr over the second half, the generator's EMA and translation augmentation did not pay.
    epochs: int = setting(20, low=1, help="epochs to train")
    # scoring 1,000 samples costs about a fifth of an epoch on the default digits
    score_every: int = setting(
        5, low=1, help="score FID, IS and coverage every this many epochs, and after the last"
    )
    # twice the steps of 64 per epoch at the same cost: FID 69 against 98
    batch_size: int = setting(32, low=2, help="real images per critic step, over all processes")
    lr: float = setting(  # Adam with betas (beta1, 0.999), as Radford et al., at 8x their lr
        1.6e-3, low=0, low_open=True, help="Adam's learning rate, for both networks"
    )
    beta1: float = setting(0.5, low=0, high=1, high_open=True, help="Adam's first beta")
    n_critic: int = setting(5, low=1, help="critic steps per generator step (wgan-gp)")


# Each classifier family's default search space, for tune: a setting of its TrainConfig or
# model config -> (low, high, "log" or "linear"), or a list of choices. A space file of the same
# shape (JSON or YAML) replaces the ranges it names and adds settings it names anew.
ADAMW_SPACE = {  # what every family searches over, its optimiser and batch size
    "lr": (3e-4, 1e-2, "log"),
    "weight_decay": (1e-6, 1e-2, "log"),
    "batch_size": [64, 128, 256],
}

# Every table keyed by a family's name, derived from the registrations (neuroflow.families).
FAMILY = registered()  # name -> Family, as registered when this module is imported
FAMILIES, CLASSIFIERS = families.FAMILIES, families.CLASSIFIERS
MODELS = {name: family.config for name, family in FAMILY.items()}
TRAINING = {name: TrainConfig(**FAMILY[name].training) for name in CLASSIFIERS}
SPACES = {name: {**ADAMW_SPACE, **FAMILY[name].space} for name in CLASSIFIERS}
METRICS = families.METRICS


# --- the registry ---------------------------------------------------------------------------

METRIC_NAMES = ("", *METRICS)


@config
class RegisterConfig(Checked):
    run_id: str = setting(
        "", check=optional_run_id, help="a training run; empty: the best run of --family"
    )
    family: str = setting(
        "", choices=("", *FAMILIES), help="the run's family; needed when run_id is empty"
    )
    data: str = setting(
        "",
        check=lambda value: value and check_data_value(value),
        help="without run_id, choose among runs on this data (preprocess run id, "
        "runs:/<run id>/prepared or latest); empty: the data of the family's newest run",
    )
    model_name: str = setting("", help="default <dataset>_<family>, e.g. mnist_t10k_cnn")
    metric: str = setting(
        "",
        choices=METRIC_NAMES,
        help="the metric that picks the best run; empty: the family's primary metric",
    )
    catalog: str = CATALOG.field()
    schema: str = SCHEMA.field()

    def check(self) -> None:
        if self.family and self.metric:
            try:
                metric_for(self.family, self.metric)
            except ValueError as error:
                self.refuse(("metric",), str(error))


# the digits' default test split holds about 360 images; fewer than 100 decide by noise
MIN_UNSEEN = Setting(
    100, low=1, help="the fewest test images neither version trained or validated on"
)


@config
class PromoteConfig(Checked):
    model_name: str = setting("digits_cnn", help="the registered model")
    candidate: str = setting("challenger", help="an alias or a version number")
    min_delta: float = setting(0.0, low=0, help="how much better the candidate must score")
    metric: str = setting("", choices=METRIC_NAMES, help="empty: the family's primary metric")
    dry_run: bool = setting(False, help="decide and log, but move no alias")
    stage: str = setting("", help="also move the deprecated registry stage (e.g. Production)")
    min_unseen: int = MIN_UNSEEN.field()
    dataset_changed: bool = setting(
        False,
        help="compare with a champion trained on another dataset or class set, on the "
        "candidate's test images: the dataset changed on purpose",
    )


# --- main -----------------------------------------------------------------------------------

ENV_MANAGERS = ("local", "virtualenv", "uv", "conda")


@config
class PipelineConfig(SourceConfig):
    models: tuple[str, ...] = setting(FAMILIES, choices=FAMILIES, help="which families to train")
    epochs: int = setting(
        0, low=0, help="epochs for every trainer; 0 = each trainer's own default, tuned for a CPU"
    )
    tune_trials: int = setting(
        0, low=0, help="tune each classifier family with this many trials; 0 = train the defaults"
    )
    use_cache: bool = setting(True, help="reuse finished steps")
    promote: bool = setting(True, help="run promote after register")
    min_unseen: int = MIN_UNSEEN.field(  # a small folder of one's own holds fewer
        help="promote's: the fewest test images neither version trained or validated on"
    )
    env_manager: str = setting(
        "local", choices=ENV_MANAGERS, help="for every child run: children do not inherit it"
    )
    catalog: str = CATALOG.field()
    schema: str = SCHEMA.field()


# --- tune -----------------------------------------------------------------------------------

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")


@config
class TuneConfig(Checked):
    family: str = setting("cnn", choices=tuple(SPACES), help="the classifier family to tune")
    data: str = setting(
        "latest",
        check=check_data_value,
        help="preprocess run id, runs:/<run id>/prepared, or latest",
    )
    trials: int = setting(20, low=1, help="trials to run in all, those of a resumed study included")
    timeout: float = setting(
        0.0, low=0, help="stop starting trials after this many seconds; 0: never"
    )
    epochs: int = setting(3, low=1, help="epochs of each trial")
    seed: int = setting(0, low=0, help="the sampler's seed, and each trial's")
    sampler: str = setting("tpe", choices=SAMPLERS, help="tpe: Optuna's TPE; random")
    pruner: str = setting(
        "median", choices=PRUNERS, help="stop a trial whose val_loss trails the others'"
    )
    space: str = setting("", help="a JSON or YAML file of ranges; empty: the family's default")
    study: str = setting(
        "", help="the study's name; empty: tune-<family>-<data digest>-<code digest>"
    )
    storage: str = setting(
        "",
        help="an SQL URL for the study (sqlite:///..., postgresql://...); empty: kept with the run",
    )
    workers: int = setting(1, low=1, high=32, help="local worker processes sharing the study")


# --- predict --------------------------------------------------------------------------------

ENGINES = ("local", "spark")


@config
class PredictConfig(Checked):
    model: str = setting("models:/digits_cnn@champion", help="a classifier's models:/ URI")
    data: str = setting(
        "",
        help="a folder or archive of IDX files, a preprocess run id, a .npy array of (N, H, W) "
        "pixels, a folder of pictures (labelled by folders named after the model's classes), "
        "or a Parquet table of pictures",
    )
    image_column: str = IMAGE_COLUMN.field()
    label_column: str = LABEL_COLUMN.field(
        help="for a Parquet table: the column of classes, if it has one (ids or class names)"
    )
    engine: str = setting(
        "local", choices=ENGINES, help="local, or spark: the model as mlflow.pyfunc.spark_udf"
    )
    batch_size: int = setting(1024, low=1, help="images per model call")
