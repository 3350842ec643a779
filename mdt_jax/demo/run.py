"""The demo, top to bottom: teachers -> distillation runs -> evaluation -> latency -> figures, report.

    run_demo(workdir, plan, teachers={"ss": stem, "slat": stem}, distill_configs={"ss": cfg, "slat": cfg})

`distill_configs` are the stages' toy distillation configs (configs/distill.py:<stage>_toy; the
launcher reads them, so this package does not import the repo's configs). Every part's result is
stored as it finishes (distill_runs, eval.scoring), so a rerun in the same workdir skips finished
parts; the latency block is measured in one go, all methods one after another, and stored as one.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from pathlib import Path

import jax
import numpy as np

from conversion import trellis
from mdt_jax.data import toy_condition
from mdt_jax.demo import distill_runs, report
from mdt_jax.demo.plan import STAGES, STUDENTS, DemoPlan
from mdt_jax.demo.progress import Progress
from mdt_jax.eval import scoring
from mdt_jax.generation.toy_sampling import ChunkLayout, ToySamplers, median_seconds

# Seconds measured on the loaded 2-core machine the defaults were sized on (progress weights only):
# a network evaluation per sample, a training step at the toy config's batch, the compilation of a
# training step and of a sampler.
_SS_SAMPLE_FORWARD_S = 0.015
_SLAT_SAMPLE_FORWARD_S = 0.02
_STEP_S = {"ss": {"vm_vd": 2.5, "cm": 2.2}, "slat": {"vm_vd": 8.0, "cm": 3.5}}
_TRAIN_COMPILE_S = {"ss": 60.0, "slat": 120.0}
_COMPILE_S = {"ss": 9.0, "slat": 12.0}


def check_condition_table(stem) -> None:
  """A teacher shipped with `condition_table.json` beside it must have been trained with today's tokens."""
  path = Path(stem).parent / "condition_table.json"
  if not path.exists():
    return
  table = json.loads(path.read_text())
  actual = toy_condition.table_checksum()  # the tokens the demo gives the models
  if actual != table["sha256"]:
    raise ValueError(f"{path}: the teachers were trained with condition tokens of sha256 {table['sha256']}, but "
                     f"mdt_jax.data.toy_condition now gives {actual}: the toy condition table changed")


def checkpoint_digest(stem) -> str:
  return hashlib.sha256(Path(f"{stem}.safetensors").read_bytes()).hexdigest()[:16]


def _weights(plan: DemoPlan, batch_fraction: dict) -> dict:
  n1 = plan.per_condition * len(plan.conditions)
  n2 = plan.stage2_per_condition * len(plan.conditions)
  weights = {}
  for stage in STAGES:
    for student, objective in STUDENTS.items():
      weights[f"distill {stage} {student}"] = (_TRAIN_COMPILE_S[stage] + plan.distill_steps[stage]
                                               * _STEP_S[stage][objective] * batch_fraction[stage])
  weights["reference rows"] = 5.0 + 3.0 * plan.spread_seeds
  for m in plan.methods():
    weights[f"stage 1 {m.name}"] = _COMPILE_S["ss"] + n1 * m.nfe * _SS_SAMPLE_FORWARD_S
    weights[f"stage 2 {m.name}"] = _COMPILE_S["slat"] + n2 * m.nfe * _SLAT_SAMPLE_FORWARD_S
    weights[f"pipeline {m.name}"] = _COMPILE_S["slat"] + n2 * m.nfe * _SLAT_SAMPLE_FORWARD_S
  for m in plan.spread_methods():
    weights[f"spread {m.name}"] = plan.spread_seeds * n1 * m.nfe * _SS_SAMPLE_FORWARD_S
  weights["latency"] = len(plan.methods()) * (_COMPILE_S["ss"] + 2 * _COMPILE_S["slat"])
  weights["figures and report"] = 30.0
  return weights


def run_demo(workdir, plan: DemoPlan, *, teachers: dict, distill_configs: dict, command: str = "", out=print) -> Path:
  """Runs (or resumes) the whole demo in `workdir`; -> the path of report.md."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  started = time.time()
  load_at_start = os.getloadavg()
  batch = {s: distill_configs[s].batch_size_per_device for s in STAGES}
  fraction = {s: plan.distill_overrides.get(s, {}).get("batch_size_per_device", batch[s]) / batch[s] for s in STAGES}
  progress = Progress(_weights(plan, fraction), out)
  out(f"mdt-jax demo in {workdir}: {len(progress.weights)} tasks, first estimate "
      f"{sum(progress.weights.values()) / 60:.0f} min on a loaded 2-core CPU")

  # Teachers and the distilled students.
  models, params, checkpoints = {}, {}, {}
  for stage in STAGES:
    models[stage], teacher_params = trellis.load_checkpoint(teachers[stage])
    params[stage] = {"teacher": teacher_params}
    checkpoints[f"{stage}_teacher"] = checkpoint_digest(teachers[stage])
  for stage in STAGES:
    check_condition_table(teachers[stage])
    channels = models[stage].cond_channels
    if channels != toy_condition.DEFAULT_CHANNELS:
      raise ValueError(f"the {stage} teacher {teachers[stage]} has cond_channels {channels}; the toy condition "
                       f"tokens have {toy_condition.DEFAULT_CHANNELS}")
  runs = {}
  for stage in STAGES:
    for student in STUDENTS:
      runs[(stage, student)] = progress.task(
          f"distill {stage} {student}",
          lambda stage=stage, student=student: distill_runs.distill(
              distill_configs[stage], student, workdir, teacher=teachers[stage],
              teacher_digest=checkpoints[f"{stage}_teacher"], steps=plan.distill_steps[stage],
              overrides=plan.distill_overrides.get(stage, {}), toy_num_train=plan.toy_num_train),
          lambda stage=stage, student=student: distill_runs.stored(
              workdir, stage, student, teacher_digest=checkpoints[f"{stage}_teacher"],
              steps=plan.distill_steps[stage]))
      _, params[stage][student] = trellis.load_checkpoint(runs[(stage, student)]["export"])
      checkpoints[f"{stage}_{student}"] = checkpoint_digest(runs[(stage, student)]["export"])

  # Evaluation: the same conditions and noises for every method.
  results = scoring.Results(workdir, {"plan": plan.to_dict(), "checkpoints": checkpoints})
  sets = scoring.EvalSets.build(plan)
  samplers = ToySamplers(models["ss"], models["slat"], seed=plan.seed)
  layout = ChunkLayout(plan.chunk_shapes, plan.chunk_voxels, plan.chunk_parents)
  reference = progress.task("reference rows", lambda: scoring.reference_rows(sets, plan, results),
                            lambda: results.get("reference", "real"))
  rows = {part: {} for part in ("stage1", "stage2", "pipeline", "spread")}
  for m in plan.methods():
    ss, slat = params["ss"][m.params], params["slat"][m.params]
    rows["stage1"][m.name] = progress.task(
        f"stage 1 {m.name}", lambda: scoring.stage1(samplers, ss, sets, m, results),
        lambda: results.get("stage1", m.name))
    rows["stage2"][m.name] = progress.task(
        f"stage 2 {m.name}", lambda: scoring.stage2(samplers, slat, sets, m, layout, results),
        lambda: results.get("stage2", m.name))
    rows["pipeline"][m.name] = progress.task(
        f"pipeline {m.name}",
        lambda: scoring.pipeline(samplers, slat, sets, m, layout, plan.stage2_per_condition, results),
        lambda: results.get("pipeline", m.name))
  for m in plan.spread_methods():
    rows["spread"][m.name] = progress.task(
        f"spread {m.name}", lambda: scoring.seed_spread(samplers, params["ss"][m.params], sets, m, plan, results),
        lambda: results.get("spread", m.name))

  # Latency per sample at batch 1, every method in one block.
  def measure_latency():
    cond1, cond2 = sets.cond[0], toy_condition.condition_tokens(sets.structure_cond_ids[0])
    latency = {}
    for m in plan.methods():
      ss, slat = params["ss"][m.params], params["slat"][m.params]
      pipeline_s, (voxels, _) = median_seconds(lambda: samplers.pipeline_one(ss, slat, cond1, m, 0),
                                               plan.latency_repeats)
      latency[m.name] = {
          "stage1": median_seconds(lambda: samplers.structures(ss, cond1[None], m, [0]), plan.latency_repeats)[0],
          "stage2": median_seconds(lambda: samplers.single_latents(slat, sets.structures[0], cond2, m, 0),
                                   plan.latency_repeats)[0],
          "pipeline": pipeline_s, "pipeline_voxels": len(voxels)}
    return results.put("latency", "all", {"seconds": latency, "repeats": plan.latency_repeats})
  latency = progress.task("latency", measure_latency, lambda: results.get("latency", "all"))

  def write_report():
    context = {"command": command, "workdir": str(workdir), "teachers": teachers, "runs": runs, "plan": plan,
               "rows": rows, "reference": reference, "latency": latency, "sets": sets,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
                           "backend": jax.default_backend(), "load_at_start": load_at_start,
                           "load_at_end": os.getloadavg()},
               "run_started": started, "run_seconds": time.time() - started,
               "params_count": {s: sum(int(np.size(p)) for p in jax.tree.leaves(params[s]["teacher"]))
                                for s in STAGES}}
    return report.write(workdir, context)
  return progress.task("figures and report", write_report)
