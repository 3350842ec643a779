"""Expected reasons for a training run to stop; each message names the file, field or step at fault.

Entry points print them as one line (mdt_jax.cli); anything else is a bug and keeps its traceback.
"""


class RunError(Exception):
  """A run that cannot start or go on, for a reason its message states."""


class UnusableWorkdir(RunError):
  """The workdir cannot hold this run: not a directory, or not writable."""


class ConfigMismatch(RunError):
  """The workdir belongs to a run with a different config (fields named), or a checkpoint's tree does
  not match this run's model and optimizer state."""


class NonFiniteTraining(RunError):
  """``config.max_consecutive_skips`` steps in a row had a non-finite loss, gradient norm or update."""
