"""Orbax checkpoints of the training state and the data iterator's position.

``<workdir>/checkpoints/<step>/{state,data}``: keep the last N plus every ``keep_period``-th;
saves are asynchronous and land atomically (orbax writes a temporary directory and renames it, so
a process killed mid-save leaves only a temporary directory, which is ignored). Restoring tries the
newest step first and falls back to older ones when a checkpoint is corrupt or partial, warning
with the step and directory it skipped; skipped ones are moved to
``<workdir>/checkpoints_unreadable/<step>`` so that the resumed run can save those steps again.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

UNREADABLE = "checkpoints_unreadable"


def manager(workdir: str | Path, config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.keep_checkpoints, keep_period=config.keep_period or None, create=True,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(Path(workdir).absolute() / "checkpoints", options=options)


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict):
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)))


def _try_restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """-> (state, data_state), or None (with a warning naming the directory) when unreadable."""
  directory = Path(mngr.directory) / str(step)
  try:
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
  except Exception as e:  # a corrupt or partial checkpoint: any read error
    logging.warning("checkpoint at step %d (%s) is unreadable, trying an older one: %s: %s", step, directory,
                    type(e).__name__, str(e)[:300])
    return None
  if int(jax.device_get(restored["state"].step)) != step:
    logging.warning("checkpoint directory %s holds step %d: skipped", directory, int(restored["state"].step))
    return None
  return restored["state"], dict(restored["data"])


def _set_aside(mngr: ocp.CheckpointManager, steps: list[int]):
  """Moves unreadable step directories to ``<workdir>/checkpoints_unreadable/`` (process 0)."""
  if jax.process_index() == 0:
    target = Path(mngr.directory).parent / UNREADABLE
    target.mkdir(exist_ok=True)
    for step in steps:
      destination = target / str(step)
      while destination.exists():
        destination = destination.with_name(destination.name + "_")
      shutil.move(str(Path(mngr.directory) / str(step)), str(destination))
      logging.warning("moved the unreadable checkpoint of step %d to %s", step, destination)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("unreadable checkpoints set aside")
  mngr.reload()


def restore_latest(mngr: ocp.CheckpointManager, abstract_state):
  """-> (state, data_state) of the newest readable checkpoint, or None when there is none.

  abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with the target shardings (any mesh).
  """
  unreadable, restored = [], None
  for step in sorted(mngr.all_steps(), reverse=True):
    restored = _try_restore(mngr, step, abstract_state)
    if restored is not None:
      break
    unreadable.append(step)
  if unreadable:
    _set_aside(mngr, unreadable)
  return restored


def saved_steps(workdir: str | Path) -> list[int]:
  """Steps of the readable-looking checkpoints of a run, ascending (no model or config needed)."""
  directory = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def restore_weights(workdir: str | Path, step: int) -> tuple[dict, list]:
  """The student's params and its EMAs (in ``config.ema_rates`` order) at ``step`` of a run, as host
  arrays, read without the model or the optimizer (offline evaluation of a run's checkpoints)."""
  directory = Path(workdir).absolute() / "checkpoints"
  if not (directory / str(step)).is_dir():
    raise FileNotFoundError(f"no checkpoint of step {step} in {directory} (saved: {saved_steps(workdir)})")
  with ocp.CheckpointManager(directory) as mngr:
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return state["params"], list(state["ema"])
