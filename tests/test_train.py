"""The training system: toy runs end to end, resume after SIGKILL, unreadable checkpoints, the 8-device
mesh, two processes, the optimiser's pieces, and real-data (TRELLIS layout + DINOv2) runs.

Tiny sizes everywhere: one-block width-32 models, a 240-shape toy train split, a few steps (one for
the sparse stage, whose batches change capacity, hence program, from step to step). A session teacher
(flow matching, logged every step) is the reference that the subprocess runs (killed and resumed, two
processes) must reproduce; they share the compilation cache conftest.py sets. Training runs compile
with XLA's backend optimisations off (``jax_disable_most_optimizations``, in process and in the
subprocesses alike): the sparse steps compile ~3x faster, and the arithmetic is the same IEEE
arithmetic, only less optimised code.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conversion import trellis
from configs import distill as distill_configs, teacher as teacher_configs
from conftest import random_zero_inits
from mdt_jax import sparse
from mdt_jax.data import trellis_builder, trellis_inputs, trellis_testing
from mdt_jax.train import faults, inputs, models, partitioning
from mdt_jax.train.checkpoints import UNREADABLE, Checkpoints
from mdt_jax.errors import ConfigMismatch, NonFiniteTraining
from mdt_jax.train.finite import leaf_name
from mdt_jax.train.loop import train
from mdt_jax.train.optimizer import adaptive_clip, ema_update, make_optimizer
from mdt_jax.train.state import init_state
from mdt_jax.train.step import make_train_step

ROOT = Path(__file__).resolve().parents[1]
DINOV2 = ROOT / "tests" / "fixtures" / "dinov2"
# One block, width 32; the sparse model without io stages (no 2x down/up-sampling: the model's tests
# cover those; here they would only triple the compile time of every sparse step).
TINY = {"ss": {"model.args.num_blocks": 1, "model.args.model_channels": 32},
        "slat": {"model.args.num_blocks": 1, "model.args.model_channels": 32, "model.args.io_block_channels": (),
                 "model.args.patch_size": 1}}
# The session teacher: every subprocess run below repeats these settings and must reproduce its losses.
SS_TEACHER = {**TINY["ss"], "batch_size_per_device": 4, "total_steps": 16, "checkpoint_every": 4,
              "keep_checkpoints": 2, "log_every": 1, "snapshot_steps": (1,), "snapshot_count": 2}
LOSS_KEYS = ("loss", "grad_norm", "t_bin_loss")
SUBPROCESS_TIMEOUT = 600


def config_of(spec, **overrides):
  """``configs/<file>.py:<variant>`` with ``--config.<key>=<value>`` overrides (dotted keys)."""
  file, variant = spec.split(":")
  config = {"teacher": teacher_configs, "distill": distill_configs}[file].get_config(variant)
  config.update_from_flattened_dict(overrides)
  return config


def command(spec, workdir, overrides, *extra):
  return [sys.executable, "launch/train.py", f"--config=configs/{spec.replace(':', '.py:')}", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in overrides.items()], *extra]


def env(devices=1):
  return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1",
              XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


@contextlib.contextmanager
def quick_compiles():
  """XLA backend optimisations off while training in this process (restored afterwards)."""
  jax.config.update("jax_disable_most_optimizations", True)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", False)


def run(config, workdir):
  with quick_compiles():
    return train(config, workdir)


def metrics_of(workdir):
  return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def assert_same_losses(lines, reference, rtol=1e-6):
  """Every logged line equals the reference's line of the same step (several lines may share a step)."""
  by_step = {m["step"]: m for m in reference}
  for m in lines:
    for key in LOSS_KEYS:
      np.testing.assert_allclose(m[key], by_step[m["step"]][key], rtol=rtol, atol=1e-7,
                                 err_msg=f"step {m['step']} {key}")


@pytest.fixture(scope="session")
def toy_quick(tmp_path_factory):
  """Overrides for quick toy runs on a 240-shape train split built once for the session."""
  data_dir = str(tmp_path_factory.mktemp("toy_tfds"))
  quick = {"data.data_dir": data_dir, "data.toy_num_train": 240, "log_every": 1, "snapshot_steps": ()}
  inputs.prepare(inputs.toy_dataset_builder(config_of("teacher:ss_toy", **quick), data_dir))
  return quick


@pytest.fixture(scope="session")
def ss_teacher(toy_quick, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ss_teacher")
  run(config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER}), workdir)
  return workdir


@pytest.fixture(scope="session")
def slat_teacher(toy_quick, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("slat_teacher")
  run(config_of("teacher:slat_toy", **{**toy_quick, **TINY["slat"], "batch_size_per_device": 2,
                                       "total_steps": 1}), workdir)
  return workdir


# ----------------------------------------------------------------------------------------------
# Toy variants end to end.

@pytest.mark.parametrize("stage", ["ss", "slat"])
def test_toy_teacher_then_distill(stage, request, toy_quick, tmp_path):
  teacher_dir = request.getfixturevalue(f"{stage}_teacher")
  done = json.loads((teacher_dir / "done.json").read_text())
  lines = metrics_of(teacher_dir)
  assert done["skipped"] == 0 and [m["step"] for m in lines] == list(range(1, done["step"] + 1))
  assert all(np.isfinite(m["loss_fm"]) and m["loss_vm"] == 0 for m in lines)
  assert list((teacher_dir / "tensorboard").iterdir())
  if stage == "ss":
    assert (teacher_dir / "snapshots" / "16" / "steps1.npz").exists()
    assert (teacher_dir / "snapshots" / "16" / "steps1_0.png").read_bytes()[:4] == b"\x89PNG"

  teacher_stem = teacher_dir / "export" / "student_ema0.999"
  workdir, steps = tmp_path / "distill", 2 if stage == "ss" else 1
  state = run(config_of(f"distill:{stage}_toy", **{**toy_quick, "teacher_checkpoint": str(teacher_stem),
                                                   "batch_size_per_device": 2, "total_steps": steps}), workdir)
  lines = metrics_of(workdir)
  assert [m["step"] for m in lines] == list(range(1, steps + 1)) and int(state.skipped) == 0
  assert all(m["loss_vm"] > 0 and m["loss_vd"] > 0 and np.isfinite(m["loss"]) for m in lines)
  # The student started as the teacher and moved; its export loads back as a TRELLIS checkpoint.
  _, teacher_params = trellis.load_checkpoint(teacher_stem)
  model, student_params = trellis.load_checkpoint(workdir / "export" / "student")
  assert type(model).__name__ == ("SparseStructureFlowModel" if stage == "ss" else "SLatFlowModel")
  moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), teacher_params, student_params)
  assert max(jax.tree.leaves(moved)) > 0


def test_finished_run_exits_at_once(toy_quick, ss_teacher, capsys):
  assert train(config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER}), ss_teacher) is None
  assert "training already finished" in capsys.readouterr().out


def test_unreadable_latest_checkpoint_falls_back_with_warning(toy_quick, ss_teacher, tmp_path, caplog):
  workdir = tmp_path / "run"
  shutil.copytree(ss_teacher, workdir)
  (workdir / "done.json").unlink()  # as if killed after its last save
  latest = workdir / "checkpoints" / "16"
  for f in (latest / "state").rglob("*"):
    if f.is_file():
      f.write_bytes(b"\0garbage")
  run(config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER, "snapshot_steps": ()}), workdir)
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert any(str(latest) in w and "unreadable" in w for w in warnings), warnings
  assert (workdir / "checkpoints_unreadable" / "16").is_dir()
  resumed = metrics_of(workdir)[16:]
  assert [m["step"] for m in resumed] == [13, 14, 15, 16]  # from checkpoint 12
  assert_same_losses(resumed, metrics_of(ss_teacher))


# ----------------------------------------------------------------------------------------------
# Nothing lost, nothing silently wrong: verified checkpoints, one run per workdir, idempotent finish.

def files_of(directory):
  """{relative path: bytes} of every file under ``directory``."""
  return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(Path(directory).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def teacher_state_abstract(toy_quick):
  """(config, abstract TrainState with one-device shardings) of the session teacher."""
  config = config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER})
  with quick_compiles():
    _, params, _, _ = models.student_and_teacher(config)
  optimizer = make_optimizer(config, params)
  abstract = jax.eval_shape(lambda p: init_state(p, optimizer, config.ema_rates, config.seed), params)
  shardings = partitioning.tree_shardings(abstract, partitioning.make_mesh(config.mesh))
  return config, jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


@pytest.mark.parametrize("kind", ["bit_flip", "random_bytes", "deleted_metadata", "missing_checksums"])
def test_corrupted_checkpoint_is_set_aside_naming_step_file_and_cause(kind, ss_teacher, teacher_state_abstract,
                                                                      tmp_path, caplog):
  config, abstract = teacher_state_abstract
  shutil.copytree(ss_teacher / "checkpoints", tmp_path / "checkpoints")
  latest = tmp_path / "checkpoints" / "16"
  if kind == "missing_checksums":
    (latest / "checksums.process_0.json").unlink()
    file, cause = "checksums.process_0.json", "is missing"
  else:
    damaged = faults.corrupt(latest, kind, np.random.default_rng(0))
    file = str(damaged.relative_to(latest))
    cause = {"bit_flip": "checksum mismatch", "random_bytes": "checksum mismatch", "deleted_metadata": "is missing"}[kind]
  state, _ = Checkpoints(tmp_path, config).restore_latest(abstract)
  assert int(state.step) == 12
  warning = next(r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "step 16" in r.getMessage())
  assert str(latest) in warning and file in warning and cause in warning, warning
  assert (tmp_path / UNREADABLE / "16").is_dir() and not latest.exists()


def test_non_finite_optimizer_moments_are_set_aside_and_the_clippers_nan_markers_are_not(
    ss_teacher, teacher_state_abstract, tmp_path, caplog):
  config, abstract = teacher_state_abstract
  shutil.copytree(ss_teacher / "checkpoints", tmp_path / "checkpoints")
  saved = Checkpoints(tmp_path, config)
  state, data_state = saved.restore_latest(abstract)
  norms = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
           if leaf_name(path).endswith("norms")]
  assert np.isnan(np.asarray(norms[0])).sum() == config.grad_clip.buffer_size - 16  # empty slots: NaN markers
  poison = lambda path, x: x.at[0].set(np.nan) if leaf_name(path).endswith("mu/t_embedder/mlp_0/bias") else x
  saved.save(20, state.replace(step=state.step + 4, opt_state=jax.tree_util.tree_map_with_path(poison, state.opt_state)),
             data_state)
  saved.wait()
  restored, _ = Checkpoints(tmp_path, config).restore_latest(abstract)
  assert int(restored.step) == 16
  warning = next(r.getMessage() for r in caplog.records if "step 20" in r.getMessage())
  assert "non-finite values in 1 leaves" in warning and "mu/t_embedder/mlp_0/bias" in warning, warning
  assert (tmp_path / UNREADABLE / "20").is_dir()


def test_checkpoint_of_another_model_is_a_config_mismatch_and_is_not_moved(ss_teacher, teacher_state_abstract,
                                                                            tmp_path):
  config, abstract = teacher_state_abstract
  shutil.copytree(ss_teacher / "checkpoints", tmp_path / "checkpoints")
  before = files_of(tmp_path)
  wider = jax.tree_util.tree_map_with_path(
      lambda path, a: jax.ShapeDtypeStruct((*a.shape[:-1], 64), a.dtype, sharding=a.sharding)
      if leaf_name(path).endswith("t_embedder/mlp_2/bias") else a, abstract)
  with pytest.raises(ConfigMismatch, match=r"step 16 .*\(4 leaves of another shape or dtype: ema/0/t_embedder/mlp_2/bias"):
    Checkpoints(tmp_path, config).restore_latest(wider)
  assert files_of(tmp_path) == before


def test_foreign_config_is_refused_naming_fields_and_the_workdir_stays_byte_identical(toy_quick, ss_teacher, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(ss_teacher, workdir)
  (workdir / "done.json").unlink()
  before = files_of(workdir)
  slat = config_of("teacher:slat_toy", **{**toy_quick, **TINY["slat"], "total_steps": 40})
  with pytest.raises(ConfigMismatch, match=r"config\.model\.name: \"SparseStructureFlowModel\" in this workdir's run, "
                                           r"\"SLatFlowModel\" now.*config\.stage: \"ss\" in this workdir's run, \"slat\" now"):
    train(slat, workdir)
  other_lr = config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER, "lr": 2e-3, "total_steps": 40, "log_every": 5})
  with pytest.raises(ConfigMismatch, match=r"belongs to another run: config\.lr: 0\.001 in this workdir's run, 0\.002 now \("):
    train(other_lr, workdir)
  missing_teacher = config_of("distill:ss_toy", **{**toy_quick, "teacher_checkpoint": str(tmp_path / "nowhere")})
  with pytest.raises(FileNotFoundError, match="nowhere"):
    train(missing_teacher, tmp_path / "new")
  assert files_of(workdir) == before and not (tmp_path / "new").exists()


def test_restart_after_the_last_checkpoint_completes_snapshot_exports_and_done(toy_quick, ss_teacher, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(ss_teacher, workdir)
  for path in ("done.json", "snapshots", "export"):
    shutil.rmtree(workdir / path) if (workdir / path).is_dir() else (workdir / path).unlink()
  run(config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER}), workdir)
  assert json.loads((workdir / "done.json").read_text()) == {"step": 16, "skipped": 0}
  assert sorted(p.name for p in (workdir / "snapshots").iterdir()) == ["16"]
  assert (workdir / "snapshots" / "16" / "steps1.npz").read_bytes() == (ss_teacher / "snapshots" / "16" / "steps1.npz").read_bytes()
  assert files_of(workdir / "export") == files_of(ss_teacher / "export")


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e39 is inf in float32
def test_consecutive_non_finite_steps_stop_the_run_without_export(toy_quick, tmp_path):
  """lr=1e39: every update overflows (loss and gradient norm stay finite); none is applied, and the
  third in a row stops the run; the checkpoint of step 2 (the initial params) stays, finite."""
  config = config_of("teacher:ss_toy", **{**toy_quick, **SS_TEACHER, "lr": 1e39, "total_steps": 6,
                                          "checkpoint_every": 2, "max_consecutive_skips": 3})
  with pytest.raises(NonFiniteTraining, match=r"steps 1-3: 3 consecutive steps .* the last checkpoint \(step 2\) is left"):
    run(config, tmp_path)
  lines = metrics_of(tmp_path)
  assert [m["consecutive_skips"] for m in lines] == [1, 2, 3] and all(np.isfinite(m["loss"]) for m in lines)
  assert not (tmp_path / "export").exists() and not (tmp_path / "done.json").exists()
  assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()] == ["2"]


def test_interrupted_data_set_build_is_cleaned_up(toy_quick):
  builder = inputs.toy_dataset_builder(config_of("teacher:ss_toy", **toy_quick), toy_quick["data.data_dir"])
  stale = Path(builder.data_path).parent / f"incomplete.KILLED_{Path(builder.data_path).name}"
  (stale / "sub").mkdir(parents=True)
  inputs.prepare(builder)
  assert not stale.exists() and Path(builder.data_path).is_dir()


# ----------------------------------------------------------------------------------------------
# Subprocesses: SIGKILL and resume, two processes, 8 devices.

def test_sigkill_mid_run_then_rerun_resumes_exactly(toy_quick, ss_teacher, tmp_path):
  workdir = tmp_path / "run"
  cmd = command("teacher:ss_toy", workdir, {**toy_quick, **SS_TEACHER})
  process = subprocess.Popen(cmd, cwd=ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics, deadline = workdir / "metrics.jsonl", time.time() + SUBPROCESS_TIMEOUT
  while process.poll() is None and time.time() < deadline:  # kill once a checkpoint has landed with its checksums
    if (workdir / "checkpoints" / "4" / "checksums.process_0.json").is_file() and metrics.read_text().count("\n") >= 6:
      process.send_signal(signal.SIGKILL)
      break
    time.sleep(0.005)
  _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
  assert process.returncode == -signal.SIGKILL, f"the run was not killed mid-run: {stderr[-3000:]}"
  assert not (workdir / "done.json").exists()
  before = metrics_of(workdir)

  rerun = subprocess.run(cmd, cwd=ROOT, env=env(), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  lines = metrics_of(workdir)
  resumed_from = lines[len(before)]["step"] - 1 if len(lines) > len(before) else 16  # killed after its last save
  assert 4 <= resumed_from <= before[-1]["step"] and f"resumed from step {resumed_from}" in rerun.stderr
  assert sorted({m["step"] for m in lines}) == list(range(1, 17))
  assert_same_losses(lines, metrics_of(ss_teacher))
  assert json.loads((workdir / "done.json").read_text())["step"] == 16


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_with_one(toy_quick, ss_teacher, tmp_path):
  """2 processes x 2 devices, params sharded over all 4 (fsdp), each reading its half of the batch;
  the global batch is the session teacher's 4, so the losses are the one-process, one-device ones.
  Run twice over one persistent compilation cache: the second run would hang in its first collective
  on a cached program (jax 0.12.1, CPU) if launch/train.py did not turn the cache off."""
  overrides = {**toy_quick, **SS_TEACHER, "batch_size_per_device": 1, "total_steps": 3, "mesh.data": 1,
               "mesh.fsdp": 4}
  cache = dict(JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  for run in ("first", "second"):
    workdir = tmp_path / run
    flags = ["--distributed", f"--coordinator_address=127.0.0.1:{_free_port()}", "--num_processes=2"]
    cmd = command("teacher:ss_toy", workdir, overrides, *flags)
    processes = [subprocess.Popen([*cmd, f"--process_id={i}"], cwd=ROOT, env=env(devices=2) | cache,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    try:
      outputs = [p.communicate(timeout=SUBPROCESS_TIMEOUT) for p in processes]
    finally:
      for p in processes:
        p.kill()
    for i, (p, (_, stderr)) in enumerate(zip(processes, outputs)):
      assert p.returncode == 0, f"{run} run, process {i}: {stderr[-3000:]}"
      assert f"process {i} of 2, 2 local device(s)" in stderr
      assert "persistent compilation cache" in stderr
    assert [m["step"] for m in metrics_of(workdir)] == [1, 2, 3]
    assert_same_losses(metrics_of(workdir), metrics_of(ss_teacher), rtol=2e-5)
    assert (workdir / "snapshots" / "3" / "steps1.npz").exists()
    trellis.load_checkpoint(workdir / "export" / "student_ema0.999")  # gathered across both hosts


def test_2x4_mesh_step_equals_one_device_and_restores_on_other_meshes(toy_quick, ss_teacher, tmp_path):
  r = subprocess.run([sys.executable, "tests/train_mesh_check.py",
                      f"--teacher={ss_teacher / 'export' / 'student_ema0.999'}",
                      f"--data_dir={toy_quick['data.data_dir']}", f"--workdir={tmp_path}"],
                     cwd=ROOT, env=env(devices=8), capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT)
  assert r.returncode == 0, r.stderr[-5000:]
  assert "ss vm_vd: 2x4 mesh == 1 device" in r.stdout and "slat fm: 2x4 mesh == 1 device" in r.stdout
  assert "onto {'data': 1, 'fsdp': 8, 'tensor': 1} exactly" in r.stdout


# ----------------------------------------------------------------------------------------------
# The optimiser's pieces on a one-block SS model.

@pytest.fixture(scope="module")
def tiny_step():
  """(config, initial state, compiled step(state, batch), a finite batch) of a one-block SS teacher."""
  config = config_of("teacher:ss_toy", **TINY["ss"], ema_rates=(0.9, 0.5), weight_decay=0.1)
  rng = np.random.default_rng(0)
  batch = {"x0": rng.standard_normal((1, 2, 8, 8, 8, 8)).astype(np.float32),
           "cond": rng.standard_normal((1, 2, 4, 64)).astype(np.float32)}
  frozen = {"teacher": {}, "image_encoder": {}}
  with quick_compiles():
    student, params, _, _ = models.student_and_teacher(config)
    params = random_zero_inits(params)  # every leaf gets a gradient (zero-initialised ones would not move)
    optimizer = make_optimizer(config, params)
    state = jax.jit(lambda p: init_state(p, optimizer, config.ema_rates, 0))(params)
    step = jax.jit(make_train_step(config, optimizer, student_apply=lambda p, x, t, c: student.apply({"params": p}, x, t, c),
                                   teacher_apply=None, sparse=False)).lower(state, frozen, batch).compile()
  return config, state, lambda s, b: step(s, frozen, b), batch


def test_step_applies_adamw_and_ema_and_keeps_pos_emb(tiny_step):
  config, state, step, batch = tiny_step
  new, metrics = step(state, batch)
  assert int(new.step) == 1 and int(new.skipped) == 0 and np.isfinite(float(metrics["loss"]))
  old_params, new_params, emas = jax.device_get((state.params, new.params, new.ema))
  for rate, ema in zip(config.ema_rates, emas):  # EMA of the updated params, from the initial ones
    expected = jax.tree.map(lambda e, p: rate * e + (1 - rate) * p, old_params, new_params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), ema, expected)
  np.testing.assert_array_equal(new_params["pos_emb"], old_params["pos_emb"])  # frozen, even with decay
  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), new_params, old_params)
  assert sum(jax.tree.leaves(changed)) == len(jax.tree.leaves(changed)) - 1


def test_ema_update_maths():
  ema, params = {"w": jnp.array([1.0, -2.0])}, {"w": jnp.array([3.0, 0.0])}
  np.testing.assert_allclose(ema_update(ema, params, 0.75)["w"], [1.5, -1.5])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_step_is_skipped_and_counted(tiny_step, bad):
  _, state, step, batch = tiny_step
  x0 = batch["x0"].copy()
  x0[0, 1, 2, 3, 4, 5] = bad
  new, metrics = step(state, {**batch, "x0": x0})
  assert int(new.step) == 1 and int(new.skipped) == 1 and int(metrics["skipped"]) == 1
  for name in ("params", "ema", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, *jax.device_get((getattr(new, name), getattr(state, name))))


def test_update_that_overflows_is_not_applied(tiny_step):
  """Finite loss and gradient norm, but an Adam first moment near float32's max: the bias-corrected
  update overflows to inf, so the new params are not finite and nothing is applied."""
  _, state, step, batch = tiny_step
  huge = lambda path, x: x.at[:].set(3e38) if leaf_name(path).endswith("mu/t_embedder/mlp_0/bias") else x
  state = state.replace(opt_state=jax.tree_util.tree_map_with_path(huge, state.opt_state))
  new, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert int(new.skipped) == 1 and int(new.consecutive_skips) == 1
  for name in ("params", "ema", "opt_state"):
    jax.tree.map(np.testing.assert_array_equal, *jax.device_get((getattr(new, name), getattr(state, name))))


def test_adaptive_clip_uses_max_norm_until_the_buffer_is_full_then_the_percentile():
  clip = adaptive_clip(max_norm=1.0, percentile=50.0, buffer_size=4)
  state = clip.init(None)
  direction = np.array([0.6, 0.8], np.float32)  # unit norm
  recorded = []
  for norm in [0.5, 2.0, np.nan, 0.3, 0.8, 0.4, 3.0, 0.7, 0.2]:
    out, state = clip.update({"g": jnp.asarray(direction * norm)}, state)
    limit = 1.0 if len(recorded) < 4 else min(1.0, np.percentile(recorded[-4:], 50))
    if np.isfinite(norm):
      np.testing.assert_allclose(out["g"], direction * norm * min(1.0, limit / (norm + 1e-6)), rtol=1e-5)
      recorded.append(norm)
  np.testing.assert_allclose(np.sort(state.norms), np.sort(recorded[-4:]), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Real-data wiring: TRELLIS-layout root, DINOv2 in the step, the published L variants (tiny models).

# A tiny TRELLIS SS flow whose cond_channels is the DINOv2 fixture's width (64). The SLat stage's
# real-data path is tested up to the step's input (its sparse step compiles slowly; the toy SLat runs
# drive that step).
TINY_SS_FLOW = {"name": "SparseStructureFlowModel", "args": dict(
    resolution=16, in_channels=8, out_channels=8, model_channels=32, cond_channels=64, num_blocks=1, num_heads=4,
    mlp_ratio=2, patch_size=4, pe_mode="ape", qk_rms_norm=True, use_fp16=True)}


@pytest.fixture(scope="module")
def trellis_root(tmp_path_factory):
  """A TRELLIS-layout root (4 good instances, one low-aesthetic, one of 100 voxels) and a tiny SS
  teacher checkpoint (random weights, made without compiling an init)."""
  base = tmp_path_factory.mktemp("trellis")
  info = trellis_testing.write_tiny_trellis_dataset(str(base / "root"), num_good=4, broken=(),
                                                    filtered=("low_aesthetic", "too_many_voxels"))
  model, rng = trellis.build_model(TINY_SS_FLOW), np.random.default_rng(1)
  shapes = jax.eval_shape(lambda: trellis.init_params(model, jax.random.key(0)))
  params = jax.tree.map(lambda s: 0.05 * rng.standard_normal(s.shape).astype(np.float32), shapes)
  params["pos_emb"] = np.asarray(model.pos_emb_table())  # a stored buffer: the real table
  trellis.save_checkpoint(base / "ss_teacher", model, params)
  return base, info


def _trellis_data(base, stage):
  return {"data.root": str(base / "root"), "data.data_dir": str(base / "tfds"), "data.max_num_voxels": 80,
          "data.latent_model": {"ss": trellis_testing.SS_MODEL, "slat": trellis_testing.SLAT_MODEL}[stage],
          "batch_size_per_device": 2, "log_every": 1}


def test_ss_flow_L_runs_on_trellis_layout_with_dinov2_in_the_step(trellis_root, tmp_path):
  base, _ = trellis_root
  config = config_of("distill:ss_flow_L", **_trellis_data(base, "ss"), total_steps=2,
                     teacher_checkpoint=str(base / "ss_teacher"), dinov2_checkpoint=str(DINOV2 / "model.safetensors"),
                     dinov2_config=str(DINOV2 / "config.json"))
  assert config.batch_split == 2 and config.compute_dtype == "bfloat16" and config.data.min_aesthetic_score == 4.5
  state = run(config, tmp_path)
  lines = metrics_of(tmp_path)
  assert [m["step"] for m in lines] == [1, 2] and int(state.skipped) == 0
  assert all(np.isfinite(m["loss"]) and m["loss_vm"] > 0 and m["loss_vd"] > 0 for m in lines)
  summary = trellis_builder.build_summary(inputs.trellis_dataset_builder(config, tmp_path))
  assert summary["written"] == 5 and summary["filtered"] == {"aesthetic_score below 4.5": 1}
  exported = load_file(str(tmp_path / "export" / "student_ema0.9999.safetensors"))
  assert {v.dtype for v in exported.values()} == {np.dtype(np.float16)}  # use_fp16, as TRELLIS writes them


def test_slat_flow_L_inputs_tokens_filters_and_normalisation(trellis_root, tmp_path):
  """condition="tokens": precomputed float16 tokens, no image; the voxel and aesthetic filters; feats
  normalised per channel (the published SLat normalisation); micro-batches stacked."""
  base, info = trellis_root
  root = str(base / "root")
  for sha in info["good"]:
    for view in ("000", "001"):
      os.makedirs(tmp_path / sha, exist_ok=True)
      np.save(tmp_path / sha / f"{view}.npy", np.full(trellis_inputs.TOKEN_SHAPE, int(view) + 1, np.float16))
  config = config_of("distill:slat_flow_L", **_trellis_data(base, "slat"),
                     **{"data.condition": "tokens", "data.token_dir": str(tmp_path)})
  batch = jax.tree.map(np.asarray, next(inputs.TrainInputs(config, tmp_path, partitioning.make_mesh(config.mesh),
                                                          coarse_levels=1)))
  summary = trellis_builder.build_summary(inputs.trellis_dataset_builder(config, tmp_path))
  assert summary["written"] == 4
  assert summary["filtered"] == {"aesthetic_score below 4.5": 1, "more than 80 voxels": 1}
  assert set(batch) == {"x0", "cond"} and batch["cond"].dtype == np.float16
  assert batch["cond"].shape == (2, 1, *trellis_inputs.TOKEN_SHAPE)  # 2 per step as 2 micro-batches of 1
  assert set(np.unique(batch["cond"])) <= {1.0, 2.0}
  norm = trellis_builder.PUBLISHED_SLAT_NORMALIZATION
  expected = {}
  for sha in info["good"]:
    npz = np.load(os.path.join(root, "latents", trellis_testing.SLAT_MODEL, f"{sha}.npz"))
    expected.update({tuple(c): (f - norm["mean"]) / norm["std"] for c, f in zip(npz["coords"], npz["feats"])})
  x0 = batch["x0"]
  assert x0.batch_size == 1 and x0.coarse_capacities == sparse.coarse_capacities(x0.coords, x0.mask, 1)
  rows = [(tuple(c[1:]), f) for c, f, m in zip(x0.coords.reshape(-1, 4), x0.feats.reshape(-1, 8),
                                                 x0.mask.reshape(-1)) if m]
  assert rows
  for coords, feats in rows:
    np.testing.assert_allclose(feats, expected[coords], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Cluster launch scripts: their dry runs print the exact commands.

def test_slurm_dry_run_prints_sbatch_and_srun():
  r = subprocess.run(["bash", "launch/slurm_train.sh", "--dry_run", "--config=configs/distill.py:ss_flow_L",
                      "--workdir=/shared/runs/a b"], cwd=ROOT, env=dict(os.environ, NODES="4", GPUS_PER_NODE="8"),
                     capture_output=True, text=True, timeout=60)
  assert r.returncode == 0, r.stderr
  lines = r.stdout.splitlines()
  assert lines[1] == (f"sbatch --nodes=4 --ntasks-per-node=8 --gpus-per-node=8 {ROOT}/launch/slurm_train.sh "
                      r"--config=configs/distill.py:ss_flow_L --workdir=/shared/runs/a\ b ")
  assert lines[3] == (f"srun --nodes=4 --ntasks-per-node=8 --kill-on-bad-exit=1 python {ROOT}/launch/train.py "
                      r"--distributed --config=configs/distill.py:ss_flow_L --workdir=/shared/runs/a\ b ")
  assert "(32 GPUs, 32 processes)" in lines[2]
  per_node = subprocess.run(["bash", "launch/slurm_train.sh", "--dry_run", "--workdir=/w"], cwd=ROOT, timeout=60,
                            env=dict(os.environ, NODES="2", GPUS_PER_NODE="4", PER="node"), capture_output=True,
                            text=True)
  assert r"--ntasks-per-node=1 --kill-on-bad-exit=1" in per_node.stdout
  assert r"--distributed --local_device_ids=0\,1\,2\,3 --workdir=/w" in per_node.stdout


def test_tpu_dry_run_prints_one_ssh_to_all_workers():
  r = subprocess.run(["bash", "launch/tpu_train.sh", "--dry_run", "--config=configs/distill.py:ss_flow_L",
                      "--workdir=/mnt/runs/a b"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                     env=dict(os.environ, TPU_NAME="pod", ZONE="us-east5-a", PROJECT="proj"))
  assert r.returncode == 0, r.stderr
  assert r.stdout.strip() == (
      r"gcloud compute tpus tpu-vm ssh pod --zone=us-east5-a --project=proj --worker=all --command=cd\ "
      r"~/mdt-jax\ \&\&\ python3\ launch/train.py\ --distributed\ --config=configs/distill.py:ss_flow_L\ "
      r"--workdir=/mnt/runs/a\\\ b")
  missing = subprocess.run(["bash", "launch/tpu_train.sh", "--dry_run"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, env={k: v for k, v in os.environ.items() if k not in ("TPU_NAME", "ZONE")})
  assert missing.returncode != 0 and "TPU_NAME" in missing.stderr
