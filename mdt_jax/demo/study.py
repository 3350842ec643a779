"""The toy benchmark study: which parts of MDT-dist's recipe make 1-2 step students good, per stage,
over training seeds and training steps.

Each `Arm` is one distillation config (the stage's toy config plus a few fields); each runs once per
training seed in `<workdir>/runs/<stage>/<arm>/seed<k>`, keeping a checkpoint every `eval_every`
steps. Every kept checkpoint is scored with its raw weights and both EMAs (0.99 and 0.9) at 1 and
2 sampling steps on the demo's sets (mdt_jax/eval/scoring.py: stage 1 1-NNA / COV / MMD /
fidelity, stage 2 feature RMSE). The sampling noise is the same
for every arm, seed and checkpoint, so seeds measure training randomness only. Step 0 is the teacher
itself: its 1-2 step scores are the naive Euler rows.

Results land as they are computed: `<workdir>/results/<stage>/<arm>/seed<k>.json` (one entry per
scored checkpoint and weights), `<workdir>/results/<stage>/reference.json` (teacher, naive Euler and
real rows). A rerun skips finished runs and stored scores, so the study resumes across sessions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from pathlib import Path

import jax
import numpy as np

from conversion import trellis
from mdt_jax import stages
from mdt_jax.demo import distill_runs
from mdt_jax.demo.plan import DemoPlan, Method
from mdt_jax.demo.run import check_condition_table, checkpoint_digest
from mdt_jax.eval import scoring
from mdt_jax.generation.toy_sampling import ChunkLayout, ToySamplers
from mdt_jax.train import checkpoints

SAMPLE_STEPS = (1, 2)
REFERENCE_STEPS = (25, 1, 2, 4)  # the teacher's reference sampler, then naive Euler
EMA_RATES = (0.99, 0.9)  # every run keeps both; scored beside the raw weights


@dataclasses.dataclass(frozen=True)
class Arm:
  """One distillation config of the study: `overrides` on the stage's toy config (configs/distill.py).

  core: part of the required grid (objectives and du/dt scalings); else one of the tries that
  change one more field of the toy default (lr, guidance, interval, continuous target).
  """
  name: str
  objective: str
  overrides: dict
  why: str
  core: bool = True


# Per stage (by name): whether the guided arms run (guidance helps only the stage-1 teacher,
# teachers/metrics.md: best w 0.5; stage 2's is 0), and how many of the tries (None: all).
_GUIDED = {"ss": True, "slat": False}
_TRIES = {"ss": None, "slat": 1}


def arms(stage: stages.Stage | str) -> list[Arm]:
  """The study's configs for `stage` (a Stage or its name), core grid first."""
  stage = stages.get(stage, field="stage")
  grid = [
      Arm("vm_vd", "vm_vd", {}, "MDT-dist VM+VD, du/dt unscaled (the toy default: d_norm off)"),
      Arm("vm_vd_dnorm", "vm_vd", {"d_norm": True}, "as published: du/dt / (‖du/dt‖ + 0.1), norm over all elements"),
      Arm("vm_vd_dnorm_rms", "vm_vd", {"d_norm": True, "d_norm_over": "element"},
          "du/dt / (rms(du/dt) + 0.1): entries O(1) whatever the latent size"),
      Arm("vm", "vm", {}, "VM only (no VD), d_norm off"),
      Arm("cm", "cm", {}, "the consistency-distillation baseline (same interval D)"),
  ]
  guided = [
      Arm("vm_vd_cfg0.5", "vm_vd", {"cfg_teacher_vm": 0.5, "cfg_teacher_vd": 0.5},
          "guided teacher targets, w 0.5 (the teacher's best) in VM and VD, d_norm off"),
      Arm("vm_vd_published", "vm_vd", {"d_norm": True, "cfg_teacher_vm": 0.5, "cfg_teacher_vd": 0.5},
          "the published regime: guided teacher targets (w 0.5) and d_norm"),
  ]
  tries = [
      Arm("vm_vd_continuous", "vm_vd", {"distill_type": "continuous"}, "du/dt by a JVP instead of a difference", False),
      Arm("vm_vd_D0.05", "vm_vd", {"distill_interval": 0.05}, "discrete interval D 0.05 (0.01 published)", False),
      Arm("vm_vd_lr3e-4", "vm_vd", {"lr": 3e-4}, "learning rate 3e-4 (1e-4 default)", False),
      Arm("vm_lr3e-4", "vm", {"lr": 3e-4}, "VM only at learning rate 3e-4", False),
      Arm("vm_vd_continuous_rms", "vm_vd", {"distill_type": "continuous", "d_norm": True, "d_norm_over": "element"},
          "the JVP target with du/dt over its RMS", False),
      Arm("vm_160", "vm", {"total_steps": 160}, "VM only, twice the steps: does it keep improving?", False),
      Arm("cm_160", "cm", {"total_steps": 160}, "CM, twice the steps", False),
      Arm("cm_lr3e-4", "cm", {"lr": 3e-4}, "CM at learning rate 3e-4: the same tuning for the baseline", False),
  ]
  return grid + (guided if _GUIDED[stage.name] else []) + tries[:_TRIES[stage.name]]


@dataclasses.dataclass(frozen=True)
class StudyPlan:
  """The study's budget: optimiser steps per run, the checkpoint interval scored, the training seeds,
  the evaluation sets (a `DemoPlan`'s fields; its distill_steps are unused), config fields every run
  of a stage changes, and `arm_names` (the arms run; empty: all of `arms(stage)`)."""
  steps: dict
  eval_every: dict
  seeds: tuple = (0, 1)
  eval_sets: DemoPlan = DemoPlan(distill_steps={})
  distill_overrides: dict = dataclasses.field(default_factory=dict)
  arm_names: tuple = ()

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def default_plan() -> StudyPlan:
  """Sized on the 2-core CPU (see docs/toy_benchmark.md for the measured times)."""
  return StudyPlan(steps={"ss": 80, "slat": 30}, eval_every={"ss": 20, "slat": 10})


def quick_plan() -> StudyPlan:
  """A few steps of two arms on small sets: every part runs, no number means anything."""
  demo_quick = DemoPlan(distill_steps={}, conditions=(1, 13), per_condition=2, stage2_per_condition=1,
                        fidelity_train_shapes=48, chunk_shapes=4, chunk_voxels=8192, chunk_parents=2048)
  return StudyPlan(steps={"ss": 2, "slat": 1}, eval_every={"ss": 1, "slat": 1}, seeds=(0,), eval_sets=demo_quick,
                   distill_overrides={"ss": {"batch_size_per_device": 2, "data": {"toy_num_train": 48}},
                                      "slat": {"batch_size_per_device": 2, "data": {"toy_num_train": 48,
                                               "min_capacity": 0, "min_coarse_capacity": 0}}},
                   arm_names=("vm_vd_dnorm", "cm"))


def _write_json(path: Path, value) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(scoring.jsonable(value), indent=1))
  tmp.replace(path)


@contextlib.contextmanager
def _claimed(directory: Path):
  """Holds `<directory>/study.lock` (this process's pid) while a study process trains and scores the
  run, so that two processes never share a run; a lock left by a dead process is taken over."""
  directory.mkdir(parents=True, exist_ok=True)
  lock = directory / "study.lock"
  if lock.exists():
    try:
      os.kill(int(lock.read_text() or 0), 0)
      alive = True
    except PermissionError:  # it exists, under another user
      alive = True
    except (ProcessLookupError, ValueError):
      alive = False
    if alive:
      raise RuntimeError(f"{directory} is being run by another study process (pid {lock.read_text()}, "
                         f"{lock}): run different --stages or --arms in parallel")
  lock.write_text(str(os.getpid()))
  try:
    yield
  finally:
    lock.unlink(missing_ok=True)


class Study:
  """One stage's study in `workdir`: `run_all()` trains and scores every arm and seed, resuming."""

  def __init__(self, workdir: Path, plan: StudyPlan, stage: stages.Stage | str, *, base_config, teacher: str, teacher_digest: str,
               samplers, models: dict, out=print):
    self.workdir, self.plan, self.stage, self.base = Path(workdir), plan, stages.get(stage, field="stage"), base_config
    self.teacher, self.teacher_digest, self.samplers, self.models, self.out = (teacher, teacher_digest, samplers,
                                                                               models, out)
    self.sets = scoring.EvalSets.build(plan.eval_sets)
    e = plan.eval_sets
    self.layout = ChunkLayout(e.chunk_shapes, e.chunk_voxels, e.chunk_parents)
    self.fingerprint = {"teacher_digest": teacher_digest, "eval_sets": e.to_dict()}

  def results_path(self, arm: str, seed: int) -> Path:
    return self.workdir / "results" / self.stage.name / arm / f"seed{seed}.json"

  def run_dir(self, arm: str, seed: int) -> Path:
    return self.workdir / "runs" / self.stage.name / arm / f"seed{seed}"

  def _score(self, params, steps: int, seed_offset: int = 0) -> tuple[dict, np.ndarray]:
    return scoring.sample_and_score(self.stage, self.samplers, self.sets, self.layout, params,
                                       Method(f"steps{steps}", "run", steps), seed_offset)

  def reference(self) -> dict:
    """Teacher at 25 steps and naive Euler at 1/2/4 (stage 1: sampling seeds 0 and 1; seed 0's samples
    kept for the renders) and, stage 1, the real row (the second real set)."""
    path = self.workdir / "results" / self.stage.name / "reference.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    if stored.get("fingerprint") == self.fingerprint and all(
        (path.parent / f"reference_steps{steps}.npz").exists() for steps in REFERENCE_STEPS):
      return stored
    params = jax.device_put(self.models["teacher"])
    rows = {}
    for steps in REFERENCE_STEPS:
      # Stage 2's noise is fixed per sample id (ToySamplers): one sampling seed.
      scored = [self._score(params, steps, offset) for offset in ((0,) if self.stage.sparse else (0, 1))]
      rows[f"steps{steps}"] = [metrics for metrics, _ in scored]
      samples = scored[0][1]
      path.parent.mkdir(parents=True, exist_ok=True)
      np.savez_compressed(path.parent / f"reference_steps{steps}.npz", samples=samples)
    result = {"fingerprint": self.fingerprint, "teacher": rows}
    if not self.stage.sparse:
      result["second_real"] = scoring.real_scores(self.stage, self.sets)
    _write_json(path, result)
    return result

  def config(self, arm: Arm, seed: int):
    steps = self.plan.steps[self.stage.name]
    overrides = {**self.plan.distill_overrides.get(self.stage.name, {})}
    data = overrides.pop("data", {})
    config = distill_runs.run_config(self.base, arm.objective, teacher=self.teacher, steps=steps,
                                     overrides={**overrides, **arm.overrides},
                                     data_dir=str(self.workdir / "tfds"), toy_num_train=data.get("toy_num_train", 0))
    config.data.update({k: v for k, v in data.items() if k != "toy_num_train"})
    config.total_steps = arm.overrides.get("total_steps", steps)  # an arm may train longer than the plan
    config.seed = seed
    config.ema_rates = EMA_RATES
    config.checkpoint_every = self.plan.eval_every[self.stage.name]
    config.keep_checkpoints = config.total_steps // config.checkpoint_every + 1
    return config

  def run(self, arm: Arm, seed: int) -> dict:
    """Trains (or resumes) one arm and seed, then scores each kept checkpoint not yet scored."""
    with _claimed(self.run_dir(arm.name, seed)):
      return self._run(arm, seed)

  def _run(self, arm: Arm, seed: int) -> dict:
    path = self.results_path(arm.name, seed)
    result = json.loads(path.read_text()) if path.exists() else {}
    config = self.config(arm, seed)
    fingerprint = {**self.fingerprint, "config": config.to_dict()}
    if result.get("fingerprint") != json.loads(json.dumps(scoring.jsonable(fingerprint))):
      result = {"fingerprint": fingerprint, "scores": {}}
    directory = self.run_dir(arm.name, seed)
    record = distill_runs.stored_in(directory, teacher_digest=self.teacher_digest, steps=config.total_steps)
    if record is None:
      record = distill_runs.distill_into(directory, config, student=arm.name, teacher_digest=self.teacher_digest)
    result["record"] = record
    result["losses"] = distill_runs.training_curve(directory)
    final = config.total_steps
    for steps in SAMPLE_STEPS:  # the final raw samples are kept for the renders
      if not (path.parent / f"seed{seed}_steps{steps}.npz").exists():
        result["scores"].pop(f"{final}/raw/{steps}", None)
    for step in checkpoints.saved_steps(directory):
      params, emas = checkpoints.restore_weights(directory, step)
      for which, tree in {"raw": params, "ema0": emas[0], "ema1": emas[1]}.items():
        for steps in SAMPLE_STEPS:
          key = f"{step}/{which}/{steps}"
          if key in result["scores"]:
            continue
          start = time.perf_counter()
          metrics, samples = self._score(jax.device_put(tree), steps)
          result["scores"][key] = {**metrics, "eval_s": time.perf_counter() - start}
          if step == final and which == "raw":
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(path.parent / f"seed{seed}_steps{steps}.npz", samples=samples)
      _write_json(path, result)
    return result

  def run_all(self) -> dict:
    """Every arm x seed (core arms first, seed by seed); -> {arm: {seed: result}}."""
    selected = [a for a in arms(self.stage) if not self.plan.arm_names or a.name in self.plan.arm_names]
    order = ([(a, s) for s in self.plan.seeds for a in selected if a.core]
             + [(a, s) for s in self.plan.seeds for a in selected if not a.core])
    self.out(f"study {self.stage.name}: reference rows")
    done = {"reference": self.reference(), "arms": {}}
    for i, (arm, seed) in enumerate(order):
      start = time.perf_counter()
      result = self.run(arm, seed)
      done["arms"].setdefault(arm.name, {})[seed] = result
      final = result["scores"].get(f"{result['record']['steps']}/raw/1", {})
      self.out(f"study {self.stage.name} [{i + 1}/{len(order)}] {arm.name} seed {seed}: "
               f"{time.perf_counter() - start:.0f} s; final 1-step " + ", ".join(
                   f"{k} {v:.3f}" for k, v in final.items() if k in ("1nna", "cov", "fd", "rmse")))
    return done


def run_study(workdir: Path, plan: StudyPlan, *, teachers: dict, base_configs: dict, stage_names: list[str],
              command: str = "", out=print) -> Path:
  """The study of each stage of ``stage_names`` (resuming), then study.md. teachers: {stage name: TRELLIS
  stem} of both stages (checked against the toy condition table); base_configs: {stage name: its toy
  distillation config}. -> study.md's path."""
  from mdt_jax.demo import study_report  # it imports this module
  for stem in teachers.values():
    check_condition_table(stem)
  loaded = {stage: trellis.load_checkpoint(stem) for stage, stem in teachers.items()}
  samplers = ToySamplers(loaded["ss"][0], loaded["slat"][0], seed=plan.eval_sets.seed)
  for stage in stage_names:
    Study(workdir, plan, stage, base_config=base_configs[stage], teacher=teachers[stage],
          teacher_digest=checkpoint_digest(teachers[stage]), samplers=samplers,
          models={"teacher": loaded[stage][1]}, out=out).run_all()
  return study_report.write(workdir, plan, command=command)
