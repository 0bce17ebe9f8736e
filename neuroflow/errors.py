"""Errors a user can cause. Each carries one line that names the bad value and what was expected.

The steps turn them into a one-line message and a non-zero exit (see neuroflow.cli), and the
MLflow run they happen in ends FAILED.
"""


class NeuroflowError(Exception):
    """A problem with the user's input or environment, not a bug."""


class DataError(NeuroflowError):
    """A dataset or data file that cannot be used."""


class RunLookupError(NeuroflowError):
    """An MLflow run, artifact or model that does not exist or is not what was expected."""


class TrainingError(NeuroflowError):
    """Training that cannot go on, such as a loss that became NaN."""


class ConfigError(NeuroflowError, ValueError):
    """A setting out of its range, or settings that do not fit together. Names the config,
    the fields and what was expected; neuroflow.cli reports it against the options."""

    def __init__(self, config: str, fields: tuple[str, ...], problem: str):
        self.config, self.fields, self.problem = config, fields, problem
        super().__init__(f"{config}.{' / '.join(fields)}: {problem}")
