"""Orbax checkpoints of the training state and the data iterator's position, verified before use.

``<workdir>/checkpoints/<step>/{state,data}``: keep the last N plus every ``keep_period``-th;
saves are asynchronous and land atomically (orbax writes a temporary directory and renames it, so
a process killed mid-save leaves only a temporary directory, which is ignored). Once a step has
landed, each process records the checksums of the files it wrote (integrity.py, in the background).

Restoring tries the newest step first. A step is used only if (1) its files match their recorded
checksums, (2) its tree (leaf names, shapes, dtypes) is this run's, (3) orbax reads it and (4) its
params, EMA and optimizer state are finite (finite.py; the clipper's NaN markers excepted). A step
failing (1), (3) or (4) gets one warning naming the step, the file or leaf and the cause, is moved to
``<workdir>/checkpoints_unreadable/<step>`` (so that the resumed run can save that step again) and the
one before it is tried. A step failing (2) belongs to another model or optimizer: ConfigMismatch,
and nothing is moved.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from mdt_jax.errors import ConfigMismatch
from mdt_jax.train import integrity
from mdt_jax.train.finite import leaf_name, non_finite_leaves

UNREADABLE = "checkpoints_unreadable"


def _manager(directory: Path, options=None) -> ocp.CheckpointManager:
  handlers = {"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()}
  return ocp.CheckpointManager(directory, options=options, item_handlers=handlers)


def _leaves(tree) -> dict[str, tuple]:
  """``{leaf name: (shape, dtype name)}`` of a state tree or of orbax's metadata of one."""
  return {leaf_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype).name)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def structure_mismatch(saved: dict, expected: dict, limit: int = 3) -> str | None:
  """-> None when two ``_leaves`` maps agree, else the differences (at most ``limit`` of each kind)."""
  only_saved, only_here = sorted(set(saved) - set(expected)), sorted(set(expected) - set(saved))
  changed = [f"{k}: {saved[k][1]}{list(saved[k][0])} saved, {expected[k][1]}{list(expected[k][0])} here"
             for k in sorted(set(saved) & set(expected)) if saved[k] != expected[k]]
  parts = [f"{len(items)} {what}: {'; '.join(items[:limit])}{' ...' if len(items) > limit else ''}"
           for what, items in (("leaves only in the checkpoint", only_saved), ("leaves only in this run", only_here),
                               ("leaves of another shape or dtype", changed)) if items]
  return ", ".join(parts) or None


class Checkpoints:
  """The run's checkpoints: ``save`` (checksums recorded once a step lands), ``wait``,
  ``restore_latest`` (the newest verified step)."""

  def __init__(self, workdir: str | Path, config):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=config.keep_checkpoints, keep_period=config.keep_period or None, create=True,
        enable_async_checkpointing=True)
    self.directory = Path(workdir).absolute() / "checkpoints"
    self.mngr = _manager(self.directory, options)
    self.recorder = integrity.Recorder(jax.process_index(), jax.process_count())

  def save(self, step: int, state, data_state: dict):
    self.mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=ocp.args.JsonSave(data_state)))
    self.recorder.after_save(self.directory / str(step))

  def wait(self):
    """Every save has landed and has its checksums."""
    self.mngr.wait_until_finished()
    self.recorder.wait()

  def restore_latest(self, abstract_state):
    """-> (state, data_state) of the newest verified checkpoint, or None when there is none.

    abstract_state: a pytree of ``jax.ShapeDtypeStruct`` with the target shardings (any mesh).
    Raises ConfigMismatch (nothing moved) when a checkpoint's tree is not ``abstract_state``'s.
    """
    failed, restored = [], None
    for step in sorted(self.mngr.all_steps(), reverse=True):
      restored, cause = self._verified(step, abstract_state)
      if restored is not None:
        break
      logging.warning("checkpoint of step %d (%s) is unreadable or corrupt, trying an older one: %s", step,
                      self.directory / str(step), cause)
      failed.append(step)
    if failed:
      self._set_aside(failed)
    return restored

  def _verified(self, step: int, abstract_state):
    """-> ((state, data_state), None) or (None, the cause)."""
    directory = self.directory / str(step)
    cause = _agreed(integrity.verify(directory, jax.process_index(), jax.process_count()))
    if cause:
      return None, cause
    try:
      saved = _leaves(self.mngr.item_metadata(step)["state"])
    except Exception as e:  # noqa: BLE001  unreadable metadata: any read error
      return None, f"state/_METADATA is unreadable: {type(e).__name__}: {e}"
    mismatch = structure_mismatch(saved, _leaves(abstract_state))
    if mismatch:
      raise ConfigMismatch(f"the checkpoint of step {step} in {self.directory} does not match this run's model "
                           f"and optimizer state ({mismatch}); this workdir belongs to another run (nothing moved)")
    try:
      restored = self.mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001  a corrupt or partial checkpoint: any read error
      return None, f"unreadable: {type(e).__name__}: {e}"
    state = restored["state"]
    if int(jax.device_get(state.step)) != step:
      return None, f"it holds step {int(jax.device_get(state.step))}"
    bad = non_finite_leaves((state.params, state.ema, state.opt_state))
    if bad:
      return None, f"non-finite values in {len(bad)} leaves: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}"
    return (state, dict(restored["data"])), None

  def _set_aside(self, steps: list[int]):
    """Moves failed step directories to ``<workdir>/checkpoints_unreadable/`` (process 0)."""
    if jax.process_index() == 0:
      target = self.directory.parent / UNREADABLE
      target.mkdir(exist_ok=True)
      for step in steps:
        destination = target / str(step)
        while destination.exists():
          destination = destination.with_name(destination.name + "_")
        shutil.move(str(self.directory / str(step)), str(destination))
        logging.warning("moved the checkpoint of step %d to %s", step, destination)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("failed checkpoints set aside")
    self.mngr.reload()


def _agreed(cause: str | None) -> str | None:
  """This process's verification result, failed on every process when it failed on any."""
  if jax.process_count() == 1:
    return cause
  failed = multihost_utils.process_allgather(np.int32(cause is not None))
  if cause is None and np.any(failed):
    return f"it failed verification on process {int(np.argmax(failed))} (see that process's log)"
  return cause


def saved_steps(workdir: str | Path) -> list[int]:
  """Steps of the readable-looking checkpoints of a run, ascending (no model or config needed)."""
  directory = Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def restore_weights(workdir: str | Path, step: int) -> tuple[dict, list]:
  """The student's params and its EMAs (in ``config.ema_rates`` order) at ``step`` of a run, as host
  arrays, read without the model or the optimizer (offline evaluation of a run's checkpoints) once
  the step's files match their checksums."""
  directory = Path(workdir).absolute() / "checkpoints"
  if not (directory / str(step)).is_dir():
    raise FileNotFoundError(f"no checkpoint of step {step} in {directory} (saved: {saved_steps(workdir)})")
  cause = integrity.verify(directory / str(step))
  if cause:
    raise ValueError(f"the checkpoint of step {step} in {directory} failed verification: {cause}")
  with _manager(directory) as mngr:
    state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  return state["params"], list(state["ema"])
