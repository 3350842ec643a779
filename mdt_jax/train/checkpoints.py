"""Orbax checkpoints of the training state and the data iterator's position.

``<workdir>/checkpoints/<step>/{state,data}``: keep the last N plus every ``keep_period``-th;
saves are asynchronous. Restoring tries the newest step first and falls back to older ones when a
checkpoint is corrupt or partial, warning with the step and directory it skipped.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp
from absl import logging


def manager(workdir: str | Path, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, keep_period=config.keep_period or None, create=True,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict):
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """-> (state, data_state) of the newest readable checkpoint, or None when there is none.

  abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with the target shardings (any mesh).
  """
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # a corrupt or partial checkpoint: any read error
      logging.warning("checkpoint at step %d (%s) is unreadable, trying an older one: %s: %s", step,
                      Path(mngr.directory) / str(step), type(e).__name__, str(e)[:300])
      continue
    if int(jax.device_get(restored["state"].step)) != step:
      logging.warning("checkpoint directory %s holds step %d: skipped", Path(mngr.directory) / str(step),
                      int(restored["state"].step))
      continue
    return restored["state"], dict(restored["data"])
  return None
