"""Trains a teacher (flow matching) or distills a student (MDT-dist, CM), resuming from the workdir.

    python launch/train.py --config=configs/teacher.py:ss_toy --workdir=/tmp/teacher_ss
    python launch/train.py --config=configs/distill.py:ss_toy --workdir=/tmp/distill_ss \
        --config.teacher_checkpoint=/tmp/teacher_ss/export/student_ema0.999
    python launch/train.py --config=configs/distill.py:ss_flow_L --workdir=... --dry_run

Multi-host: ``--distributed`` calls ``jax.distributed.initialize()`` (SLURM, TPU pods and other
clusters are detected from the environment; ``--coordinator_address``/``--num_processes``/
``--process_id``/``--local_device_ids`` set them explicitly). launch/slurm_train.sh and
launch/tpu_train.sh start one such process per GPU (or node) and per TPU VM worker.
"""
import jax
import logging as std_logging

from absl import app, flags, logging
from ml_collections import config_flags

from mdt_jax import cli, numerics

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<file>.py:<variant>", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, logs, exports).")
_DTYPE = flags.DEFINE_enum("dtype", None, list(numerics.TRAINING_DTYPES),
                           "Compute dtype of the networks (overrides config.compute_dtype; params, EMA and "
                           "optimizer state stay float32).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the resolved config and exit.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (optional).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (optional).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (optional).")
_LOCAL_DEVICE_IDS = flags.DEFINE_list("local_device_ids", None, "Devices this process drives (optional; "
                                      "SLURM default: the task's SLURM_LOCALID, i.e. one process per GPU).")


class _QuietLibraries:
  """Keeps orbax's per-save INFO chatter out of the training log (warnings still show)."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def main(argv):
  del argv
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config = _CONFIG.value
  if config is None:
    raise app.UsageError("--config=configs/<file>.py:<variant> is required")
  if _DTYPE.value:
    config.compute_dtype = _DTYPE.value
  if _DRY_RUN.value:
    print(config)
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  if _DISTRIBUTED.value:
    local_devices = [int(i) for i in _LOCAL_DEVICE_IDS.value] if _LOCAL_DEVICE_IDS.value else None
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value, num_processes=_NUM_PROCESSES.value,
                               process_id=_PROCESS_ID.value, local_device_ids=local_devices)
    if jax.default_backend() == "cpu" and jax.config.jax_compilation_cache_dir:
      # jax 0.12.1: several CPU processes running a program read from the persistent compilation
      # cache hang in its first collective (a cold cache works); measured, tests/test_train.py.
      logging.warning("multi-process CPU run: the persistent compilation cache (%s) is off; with jax %s a cached "
                      "program hangs in its first collective", jax.config.jax_compilation_cache_dir, jax.__version__)
      jax.config.update("jax_enable_compilation_cache", False)
  logging.info("process %d of %d, %d local device(s)", jax.process_index(), jax.process_count(),
               jax.local_device_count())
  from mdt_jax.train.loop import train
  train(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
