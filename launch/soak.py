"""Soak test of the training system's reliability on a toy run; prints the figures and writes them as JSON.

    python launch/soak.py --workdir=/tmp/mdt_soak --kills=10

1. An uninterrupted reference run (``configs/teacher.py:ss_toy``, a 960-shape toy set, few steps).
2. ``--kills`` SIGKILLs at random moments (data-set build, steps, checkpoint saves, the finish) over
   several workdirs, each killed run restarted; every logged loss and metric is compared with the
   reference's, and the exports byte for byte.
3. Each corruption kind of mdt_jax/train/faults.py inflicted on the newest checkpoint of a copy of the
   reference (as if killed after its last save): detected, set aside, and the resumed losses are the
   reference's.
4. ``lr=1e39``: a non-zero exit, and no non-finite parameter in any checkpoint; no export.
5. The bad inputs (a foreign config, an existing conversion destination, bad fields, files and
   workdirs): each a non-zero exit with one error line and no traceback; a foreign config leaves the
   workdir byte-identical.
6. The cost of the checks against the toy step time: checksums recorded (in the background, once per
   checkpoint) and verified (once per start), the restored state's finiteness, and the step's guard
   (its reductions timed on their own: an upper bound of their cost inside the step, where XLA fuses
   them with the update that reads the same arrays).
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags, logging

from configs import teacher as teacher_configs
from mdt_jax import cli
from mdt_jax.train import faults, integrity, models, partitioning
from mdt_jax.train.checkpoints import UNREADABLE, Checkpoints, restore_weights, saved_steps
from mdt_jax.train.finite import all_finite, non_finite_leaves
from mdt_jax.train.optimizer import make_optimizer
from mdt_jax.train.state import init_state

ROOT = Path(__file__).resolve().parents[1]

_WORKDIR = flags.DEFINE_string("workdir", None, "Soak directory (emptied first).", required=True)
_KILLS = flags.DEFINE_integer("kills", 10, "SIGKILLs at random moments.")
_WORKDIRS = flags.DEFINE_integer("workdirs", 4, "Workdirs the kills are spread over.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments and corruptions.")
_OUT = flags.DEFINE_string("out", None, "JSON file for the figures (default <workdir>/soak.json).")

SPEC = "teacher:ss_toy"
TOY = {"data.toy_num_train": 960, "total_steps": 12, "checkpoint_every": 4, "keep_checkpoints": 3, "log_every": 1,
       "batch_size_per_device": 8, "snapshot_steps": (1,), "snapshot_count": 2}
METRIC_KEYS_SKIPPED = ("step", "steps_per_s", "time")
L_STATE_GIB = 8.3  # ss_flow_L params + EMA + AdamW per device, default mesh (README, train_memory)


def _env(cache: Path):
  return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache))


def _train_cmd(workdir: Path, spec=SPEC, **overrides):
  file, variant = spec.split(":")
  values = {**TOY, **overrides}
  return [sys.executable, "launch/train.py", f"--config=configs/{file}.py:{variant}", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in values.items()]]


def _run(cmd, env, timeout=900):
  return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _metrics(workdir: Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _max_relative_difference(lines, reference) -> tuple[float, int]:
  """(largest |a - b| / max(|b|, 1e-12) over every logged metric value, number of values compared)."""
  by_step, worst, count = {m["step"]: m for m in reference}, 0.0, 0
  for m in lines:
    ref = by_step[m["step"]]
    for key, value in m.items():
      if key in METRIC_KEYS_SKIPPED:
        continue
      a, b = np.asarray(value, np.float64), np.asarray(ref[key], np.float64)
      worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12))))
      count += a.size
  return worst, count


def _files(directory: Path) -> dict:
  return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _exports_equal(workdir: Path, reference: Path) -> bool:
  return _files(workdir / "export") == _files(reference / "export")


def kills(base: Path, reference: Path, ref_seconds: float, env, rng) -> dict:
  """--kills SIGKILLs at uniform random moments of a run, over --workdirs workdirs; each workdir is then
  run to its end. A run that ends before its kill moment does not count as a kill."""
  slots = [base / f"killed_{i}" for i in range(_WORKDIRS.value)]
  workdirs, done, failures, attempts = list(slots), 0, [], 0
  while done < _KILLS.value and attempts < 4 * _KILLS.value:
    slot = attempts % len(slots)
    attempts += 1
    if (slots[slot] / "done.json").exists():  # finished before its kill: a fresh workdir takes its place
      slots[slot] = base / f"killed_{len(workdirs)}"
      workdirs.append(slots[slot])
    process = subprocess.Popen(_train_cmd(slots[slot]), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
      process.wait(timeout=rng.uniform(0, ref_seconds))
    except subprocess.TimeoutExpired:
      process.send_signal(signal.SIGKILL)
      done += 1
    _, stderr = process.communicate()
    if process.returncode not in (0, -signal.SIGKILL):
      failures.append(f"{slots[slot].name}: exit {process.returncode}: {stderr.strip().splitlines()[-1:]}")
  worst, values, losses, exports = 0.0, 0, 0, 0
  for workdir in workdirs:
    final = _run(_train_cmd(workdir), env)
    if final.returncode != 0:
      failures.append(f"{workdir.name}: final run exit {final.returncode}: {final.stderr.strip().splitlines()[-1:]}")
      continue
    lines = _metrics(workdir)
    diff, count = _max_relative_difference(lines, _metrics(reference))
    worst, values, losses = max(worst, diff), values + count, losses + len(lines)
    exports += _exports_equal(workdir, reference)
    leftovers = list((workdir / "tfds").rglob("incomplete.*"))
    if leftovers:
      failures.append(f"{workdir.name}: interrupted data-set build left {leftovers[0]}")
  return {"kills": done, "restarts_failed": failures, "workdirs": len(workdirs), "logged_losses": losses,
          "logged_values": values, "max_relative_difference": worst, "exports_identical": exports}


def corruptions(base: Path, reference: Path, env, rng) -> dict:
  results = {}
  last = max(saved_steps(reference))
  for kind in faults.KINDS:
    workdir = base / f"corrupt_{kind}"
    shutil.copytree(reference, workdir)
    (workdir / "done.json").unlink()  # as if killed after its last save
    before = len(_metrics(workdir))
    faults.corrupt(workdir / "checkpoints" / str(last), kind, rng)
    r = _run(_train_cmd(workdir), env)
    warned = any(f"checkpoint of step {last}" in line and "unreadable or corrupt" in line for line in r.stderr.splitlines())
    resumed = _metrics(workdir)[before:]
    diff, _ = _max_relative_difference(resumed, _metrics(reference))
    results[kind] = {"exit": r.returncode, "detected": warned, "set_aside": (workdir / UNREADABLE / str(last)).is_dir(),
                     "resumed_from": resumed[0]["step"] - 1 if resumed else None, "max_relative_difference": diff,
                     "exports_identical": _exports_equal(workdir, reference)}
  return results


def non_finite_run(base: Path, env) -> dict:
  workdir = base / "lr_1e39"
  r = _run(_train_cmd(workdir, lr=1e39), env)
  nan_params = 0
  for step in saved_steps(workdir):
    params, emas = restore_weights(workdir, step)
    nan_params += sum(int(np.sum(~np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves((params, emas)))
  return {"exit": r.returncode, "error": [line for line in r.stderr.splitlines() if "error:" in line],
          "checkpoints": saved_steps(workdir), "non_finite_values_in_checkpoints": nan_params,
          "exported": (workdir / "export").exists()}


def bad_inputs(base: Path, reference: Path, env) -> dict:
  """Each bad input: its exit status and whether stderr held exactly one error line and no traceback."""
  bad = base / "bad_inputs"
  bad.mkdir()
  (bad / "not_utf8.py").write_bytes(b"\xff\xfe def get_config(): pass")
  (bad / "a_file").write_text("")
  (bad / "stem.json").write_bytes(b"\xff\xfe{}")
  foreign = base / "foreign"
  shutil.copytree(reference, foreign)
  flax_dir = bad / "flax"
  converted = _run([sys.executable, "-m", "conversion.trellis_to_flax", f"--src={reference / 'export' / 'student'}",
                    f"--dst={flax_dir}"], env)
  assert converted.returncode == 0, converted.stderr[-2000:]
  existing = foreign / "export" / "student"
  cases = {
      "foreign config (slat_toy in an ss_toy workdir)": _train_cmd(foreign, "teacher:slat_toy", total_steps=40),
      "unknown config field": _train_cmd(bad / "w1", nonexistent=1),
      "bad config value": _train_cmd(bad / "w2", objective="xx"),
      "non-numeric value": _train_cmd(bad / "w3", lr="abc"),
      "config file not UTF-8": [*_train_cmd(bad / "w4"), f"--config={bad / 'not_utf8.py'}"],
      "workdir is a regular file": _train_cmd(bad / "a_file"),
      "missing teacher checkpoint": _train_cmd(bad / "w5", "distill:ss_toy", teacher_checkpoint=bad / "nowhere"),
      "flax_to_trellis onto an existing file": [sys.executable, "-m", "conversion.flax_to_trellis", f"--src={flax_dir}",
                                                f"--dst={existing}"],
      "trellis_to_flax from a non-UTF-8 .json": [sys.executable, "-m", "conversion.trellis_to_flax",
                                                 f"--src={bad / 'stem'}", f"--dst={bad / 'out'}"],
      "trellis_to_flax from a missing checkpoint": [sys.executable, "-m", "conversion.trellis_to_flax",
                                                    f"--src={bad / 'nowhere'}", f"--dst={bad / 'out'}"],
      "evaluate_run on a workdir without config.json": [sys.executable, "launch/evaluate_run.py",
                                                        f"--workdir={bad / 'w6'}"],
  }
  before = _files(foreign)
  results = {}
  for name, cmd in cases.items():
    r = _run(cmd, env)
    errors = [line for line in r.stderr.splitlines() if "error:" in line.lower()]
    results[name] = {"exit": r.returncode, "traceback": "Traceback" in r.stderr, "error_lines": len(errors),
                     "line": errors[-1] if errors else r.stderr.strip().splitlines()[-1:]}
  results["foreign config (slat_toy in an ss_toy workdir)"]["workdir_unchanged"] = _files(foreign) == before
  results["flax_to_trellis onto an existing file"]["file_unchanged"] = (
      (existing.with_suffix(".safetensors")).read_bytes() == (reference / "export" / "student.safetensors").read_bytes())
  return results


def _timed(f, repeats: int = 5) -> float:
  """The fastest of ``repeats`` calls of ``f``, in seconds."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    f()
    best = min(best, time.perf_counter() - start)
  return best


def costs(reference: Path, step_seconds: float) -> dict:
  """Checksums and finiteness checks timed on the reference's newest checkpoint, against a toy step."""
  config = teacher_configs.get_config("ss_toy")
  config.update_from_flattened_dict({**TOY, "data.data_dir": str(reference / "tfds")})
  step_dir = reference / "checkpoints" / str(max(saved_steps(reference)))
  size = sum(p.stat().st_size for p in step_dir.rglob("*") if p.is_file())
  record = _timed(lambda: integrity.record(step_dir, 0, 1))
  verify = _timed(lambda: integrity.verify(step_dir))
  _, params, _, _ = models.student_and_teacher(config)
  optimizer = make_optimizer(config, params)
  abstract = jax.eval_shape(lambda p: init_state(p, optimizer, config.ema_rates, config.seed), params)
  shardings = partitioning.tree_shardings(abstract, partitioning.make_mesh(config.mesh))
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  state, _ = Checkpoints(reference, config).restore_latest(abstract)
  trees = (state.params, state.ema, state.opt_state)
  non_finite_leaves(trees)  # compiled once
  finiteness = _timed(lambda: non_finite_leaves(trees))
  guard = jax.jit(lambda t: all_finite(t))
  guard(trees).block_until_ready()
  guard_seconds = _timed(lambda: guard(trees).block_until_ready(), repeats=20)
  state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(trees))
  crc_rate = size / record
  return {"checkpoint_bytes": size, "state_bytes": state_bytes, "toy_step_s": step_seconds,
          "record_checksums_s": record, "verify_checksums_s": verify, "restore_finiteness_s": finiteness,
          "guard_pass_s": guard_seconds, "record_fraction_of_step": record / step_seconds,
          "record_fraction_of_steps_between_checkpoints": record / (step_seconds * TOY["checkpoint_every"]),
          "verify_fraction_of_step": verify / step_seconds, "guard_fraction_of_step": guard_seconds / step_seconds,
          "crc_bytes_per_s": crc_rate, "L_record_or_verify_s_estimate": L_STATE_GIB * 2**30 / crc_rate}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  base = Path(_WORKDIR.value).absolute()
  shutil.rmtree(base, ignore_errors=True)
  base.mkdir(parents=True)
  env, rng = _env(base / "jax_cache"), np.random.default_rng(_SEED.value)
  reference = base / "reference"
  start = time.perf_counter()
  r = _run(_train_cmd(reference), env)
  ref_seconds = time.perf_counter() - start
  if r.returncode != 0:
    raise RuntimeError(f"the reference run failed: {r.stderr[-3000:]}")
  step_seconds = float(np.median([1 / m["steps_per_s"] for m in _metrics(reference)[1:]]))
  figures = {"reference_run_s": ref_seconds, "config": {"spec": SPEC, **TOY}}
  for name, part in (("kills", lambda: kills(base, reference, ref_seconds, env, rng)),
                     ("corruptions", lambda: corruptions(base, reference, env, rng)),
                     ("lr_1e39", lambda: non_finite_run(base, env)),
                     ("bad_inputs", lambda: bad_inputs(base, reference, env)),
                     ("costs", lambda: costs(reference, step_seconds))):
    part_start = time.perf_counter()
    figures[name] = part()
    print(f"== {name} ({time.perf_counter() - part_start:.0f} s)\n{json.dumps(figures[name], indent=1, default=str)}",
          flush=True)
  out = Path(_OUT.value or base / "soak.json")
  out.write_text(json.dumps(figures, indent=1, default=str))
  print(f"wrote {out}")


if __name__ == "__main__":
  cli.run(main)
