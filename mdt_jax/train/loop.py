"""The training loop, top to bottom: checks, mesh, models, state (fresh or resumed), compiled step, loop.

Flow matching (a teacher) and distillation (a student started from the teacher) are the same
loop; ``config.objective`` picks the loss. Nothing is written before the workdir, the config (and
that it is this workdir's run: workdir.py) and the networks have been checked. Re-running in the
same workdir resumes from the newest verified checkpoint (state, EMA, optimizer and clipper, rng,
data position); a run killed after its last checkpoint completes its final snapshot and exports;
a finished run (its ``done.json`` says so) exits. ``config.max_consecutive_skips`` non-finite steps
in a row stop the run with NonFiniteTraining before any export, its last checkpoint left in place.
Multi-host: every process runs this same function on its own share of the data; only process 0
writes metrics, TensorBoard, snapshots and exports.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import logging

from jax.experimental import multihost_utils

from conversion import trellis
from mdt_jax.errors import NonFiniteTraining
from mdt_jax.train import models, partitioning, validation
from mdt_jax.train.checkpoints import Checkpoints
from mdt_jax.train.inputs import TrainInputs
from mdt_jax.train.optimizer import make_optimizer
from mdt_jax.train.snapshots import Snapshots
from mdt_jax.train.state import init_state
from mdt_jax.train.step import jit_train_step
from mdt_jax.train.workdir import RunDir


def _metrics_line(metrics: dict) -> str:
  scalars = {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}
  line = " ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
  if "t_bin_loss" in metrics:
    line += " t_bins=[" + " ".join(f"{v:.3g}" for v in np.asarray(metrics["t_bin_loss"])) + "]"
  return line


def _writer(workdir: Path):
  """TensorBoard event files (tensorboardX: a small, maintained writer that needs no TensorFlow)."""
  if jax.process_index() != 0:
    return None
  from tensorboardX import SummaryWriter
  return SummaryWriter(str(workdir / "tensorboard"))


def _on_host(tree):
  """A (possibly cross-host sharded) pytree as numpy on every host; all processes must call it."""
  return multihost_utils.process_allgather(tree, tiled=True)


def _export(workdir: Path, model, state, config):
  """The student (raw and each EMA) as TRELLIS-format checkpoints PyTorch users can load."""
  params, emas = _on_host((state.params, state.ema))
  if jax.process_index() != 0:
    return
  export = workdir / "export"
  trellis.save_checkpoint(export / "student", model, params)
  for rate, ema in zip(config.ema_rates, emas):
    trellis.save_checkpoint(export / f"student_ema{rate}", model, ema)
  logging.info("exported the student to %s (TRELLIS format)", export)


def _check_skips(consecutive: int, step: int, config, checkpoints: Checkpoints):
  """Raises NonFiniteTraining once ``consecutive`` skipped steps reach config.max_consecutive_skips."""
  if consecutive >= config.max_consecutive_skips:
    checkpoints.wait()
    latest = checkpoints.mngr.latest_step()
    last_checkpoint = "no checkpoint" if latest is None else f"the last checkpoint (step {latest}) is"
    raise NonFiniteTraining(
        f"steps {step - consecutive + 1}-{step}: {consecutive} consecutive steps had a non-finite loss, gradient "
        f"norm or update and were not applied (config.max_consecutive_skips={config.max_consecutive_skips}); "
        f"stopped without exporting, {last_checkpoint} left in place: lower config.lr or check the data")


def train(config, workdir: str | Path):
  # Checks, before anything is written.
  run_dir = RunDir(workdir)
  run_dir.check_config(config)
  workdir = run_dir.path
  if run_dir.finished(config):
    print(f"training already finished: {config.total_steps} steps in {workdir} (see done.json)")
    return None
  mesh = partitioning.make_mesh(config.mesh)
  validation.check(config, mesh)
  student, params, teacher, teacher_params = models.student_and_teacher(config)
  encoder, encoder_params = models.image_encoder(config, student)
  optimizer = make_optimizer(config, params)
  if jax.process_index() == 0:
    run_dir.start(config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("run directory started")
  checkpoints = Checkpoints(workdir, config)
  logging.info("mesh %s; student %s with %s params", dict(mesh.shape), type(student).__name__,
               f"{sum(p.size for p in jax.tree.leaves(params)):,}")

  # State: abstract shapes -> shardings -> resume or initialise.
  abstract = jax.eval_shape(lambda p: init_state(p, optimizer, config.ema_rates, config.seed), params)
  state_shardings = partitioning.tree_shardings(abstract, mesh)
  inputs = TrainInputs(config, workdir, mesh, coarse_levels=len(getattr(student, "stages", ())))
  restored = checkpoints.restore_latest(jax.tree.map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, state_shardings))
  if restored is not None:
    state, data_state = restored
    inputs.set_state(data_state)
    logging.info("resumed from step %d in %s", int(state.step), checkpoints.directory)
  else:
    params = jax.device_put(params, partitioning.tree_shardings(params, mesh))
    state = jax.jit(lambda p: init_state(p, optimizer, config.ema_rates, config.seed),
                    out_shardings=state_shardings)(params)
  del params
  start = int(state.step)

  # The compiled step: the frozen networks (teacher, image encoder) are sharded like the student,
  # passed in as arguments (never baked in as constants) and never differentiated.
  frozen = {"teacher": teacher_params or {}, "image_encoder": encoder_params or {}}
  frozen_shardings = partitioning.tree_shardings(frozen, mesh)
  frozen = jax.device_put(frozen, frozen_shardings)
  train_step = jit_train_step(config, optimizer, mesh, state_shardings, frozen_shardings, student=student,
                              teacher=teacher, image_encoder=encoder)
  toy = config.data.dataset == "toy"
  snapshots = Snapshots(config, workdir, student) if toy and jax.process_index() == 0 else None
  if not toy:
    logging.info("sample snapshots are for the toy dataset; sample an export with launch/sample.py instead")
  writer = _writer(workdir)
  progress = None
  if sys.stderr.isatty() and jax.process_index() == 0:
    from tqdm import tqdm
    progress = tqdm(total=config.total_steps, initial=start, unit="step")

  try:
    # The loop.
    examples_per_step = inputs.layout.global_batch * config.batch_split  # = devices x batch_size_per_device
    window_start, window_steps, skipped = time.perf_counter(), 0, int(state.skipped)
    for step in range(start + 1, config.total_steps + 1):
      state, metrics = train_step(state, frozen, next(inputs))
      window_steps += 1
      if progress is not None:
        progress.update(1)
      last = step == config.total_steps
      if step % config.log_every == 0 or last:
        metrics = jax.device_get(metrics)
        elapsed = time.perf_counter() - window_start
        rate = window_steps / elapsed
        logging.info("step %d/%d: %.2f steps/s, %.1f examples/s, ETA %.0f s | %s", step, config.total_steps, rate,
                     rate * examples_per_step, (config.total_steps - step) / rate, _metrics_line(metrics))
        if int(metrics["skipped"]) > skipped:
          logging.warning("%d step(s) with a non-finite loss, gradient norm or update were skipped so far",
                          int(metrics["skipped"]))
          skipped = int(metrics["skipped"])
        if jax.process_index() == 0:
          with open(workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "steps_per_s": rate, "time": time.time(),
                                **{k: np.asarray(v).tolist() for k, v in metrics.items()}}) + "\n")
        if writer is not None:
          for k, v in metrics.items():
            if np.ndim(v) == 0:
              writer.add_scalar(k, float(v), step)
            else:
              for i, x in enumerate(np.asarray(v)):
                writer.add_scalar(f"{k}/{i}", float(x), step)
          writer.add_scalar("steps_per_second", rate, step)
          writer.flush()
        window_start, window_steps = time.perf_counter(), 0
        _check_skips(int(metrics["consecutive_skips"]), step, config, checkpoints)
      if step % config.checkpoint_every == 0 or last:
        _check_skips(int(state.consecutive_skips), step, config, checkpoints)  # the save waits for the state anyway
        checkpoints.save(step, state, inputs.get_state())
      if toy and config.snapshot_every and step % config.snapshot_every == 0 and not last:
        _snapshot(state, snapshots, step)
    checkpoints.wait()
    if progress is not None:
      progress.close()
    _finish(run_dir, student, state, config, snapshots if toy else None)
  finally:
    if writer is not None:
      writer.close()
  return state


def _snapshot(state, snapshots: Snapshots | None, step: int):
  params = _on_host(state.ema[0] if state.ema else state.params)  # every process takes part
  if snapshots is not None:
    snapshots(params, step)


def _finish(run_dir: RunDir, student, state, config, snapshots: Snapshots | None):
  """The final snapshot (unless a killed run already wrote it), the exports, then ``done.json``: a
  restart after the last checkpoint completes whatever is missing."""
  if config.data.dataset == "toy" and not Snapshots.done(run_dir.path, config.total_steps):
    _snapshot(state, snapshots, config.total_steps)
  _export(run_dir.path, student, state, config)
  if jax.process_index() == 0:
    run_dir.mark_done(int(state.step), int(state.skipped))
