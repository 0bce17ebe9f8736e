"""main's options, apart from the pipeline so the door can read them without mlflow."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PipelineConfig:
    dataset: str = "digits"
    data_dir: str = "~/.cache/neuroflow/datasets"
    models: tuple[str, ...] = ("mlp", "cnn", "rnn", "dcgan")
    epochs: int = 0  # 0 = each trainer's own default, which is tuned for a CPU
    use_cache: bool = True
    promote: bool = True
    env_manager: str = "local"  # passed to every child: children do not inherit it
