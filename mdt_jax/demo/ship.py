"""Ships the toy teachers (launch/ship_teachers.py): rounds two finished teacher runs' EMA weights to
float16 TRELLIS checkpoints and measures them, after the rounding, on the demo's evaluation sets.

    ship_teachers({"ss": ss_run, "slat": slat_run}, Path("teachers"), weights="ema")

Writes <out>/{ss_toy,slat_toy}.{json,safetensors} (float16 tensors, `use_fp16: false`: computed in
float32), <out>/condition_table.json (the toy condition tokens they were trained with, by checksum),
<out>/smoke.json (a 2-step sample of both teachers at stage 1's best w, recomputed by
tests/test_teachers.py), <out>/metrics.json (everything, with the runs' steps, steps/s and wall time), <out>/metrics.md (the
tables with the reference rows and the seed spreads), <out>/guidance_and_steps.png (quality against
the guidance weight w at 25 steps, and against the number of Euler steps at w = 0 and at each stage's
best w) and the curves: <out>/<stage>_loss.png and, when launch/evaluate_run.py has scored the run,
<out>/<stage>_quality.png. Every metric is computed as the demo computes it (mdt_jax/eval/scoring.py):
stage 1 against held-out shapes, stage 2 on real structures and on the teacher's own stage-1 samples.
The best w of stage 1 is the one of lowest 1-NNA - fidelity (both in [0, 1]: guidance raises the
fidelity and, past a point, costs diversity, which 1-NNA sees); of stage 2, the one of lowest FD on
real structures.
Results are cached under `scratch` (default <ss run>/ship_eval; a rerun only recomputes what changed).
"""
import json
import shutil
from pathlib import Path

import numpy as np

from conversion import trellis
from mdt_jax.data import toy_condition
from mdt_jax.demo import figures
from mdt_jax.demo.distill_runs import training_curve
from mdt_jax.demo.plan import DemoPlan, Method
from mdt_jax.demo.run import checkpoint_digest
from mdt_jax.eval import scoring
from mdt_jax.generation.toy_sampling import ChunkLayout, ToySamplers, smoke_samples

STAGES = {"ss": "ss_toy", "slat": "slat_toy"}  # stage -> the shipped teacher's file stem
GUIDANCE_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 3.0, 5.0, 7.5)   # at 25 steps
STEP_COUNTS = (1, 2, 4, 8, 25)                 # at w = 0 and at each stage's best w


def run_summary(run: Path) -> dict:
  """Command-relevant facts of a finished run: steps, wall time, steps/s, final loss."""
  config = json.loads((run / "config.json").read_text())
  done = json.loads((run / "done.json").read_text())
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  rates = [r["steps_per_s"] for r in rows if "steps_per_s" in r]
  times = [r["time"] for r in rows if "time" in r]
  return {"steps": done["step"], "skipped": done["skipped"], "ema_rate": config["ema_rates"][0],
          "batch": config["batch_size_per_device"], "lr": config["lr"], "final_loss": rows[-1].get("loss"),
          "median_steps_per_s": float(np.median(rates)) if rates else None,
          "logged_wall_s": times[-1] - times[0] if len(times) > 1 else None}


def round_to_float16(run: Path, stem: Path, weights: str) -> None:
  """The run's first EMA export (or its raw params), stored as float16 at `stem` (use_fp16 stays false)."""
  rate = json.loads((run / "config.json").read_text())["ema_rates"][0]
  model, params = trellis.load_checkpoint(run / "export" / ("student" if weights == "raw" else f"student_ema{rate}"))
  if trellis.model_config(model)["args"].get("use_fp16"):
    raise ValueError(f"{run}: a toy teacher computes in float32; its config has use_fp16")
  trellis.save_checkpoint(stem, model, params, storage_dtype=np.float16)


def ship_teachers(runs: dict, out: Path, *, weights: str = "ema", scratch: Path | None = None, log=print) -> str:
  """Rounds and measures the teachers of `runs` ({"ss": run dir, "slat": run dir}) into `out` (the files
  of the module docstring); weights "ema" (each run's first EMA) or "raw". -> metrics.md's text."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  runs = {stage: Path(run) for stage, run in runs.items()}
  for stage, run in runs.items():
    round_to_float16(run, out / STAGES[stage], weights)
  table = {"num_tokens": toy_condition.DEFAULT_NUM_TOKENS, "channels": toy_condition.DEFAULT_CHANNELS,
           "seed": toy_condition.DEFAULT_TABLE_SEED, "sha256": toy_condition.table_checksum()}
  (out / "condition_table.json").write_text(json.dumps(table, indent=1) + "\n")

  # Measured after the rounding: load the shipped files.
  models, params = {}, {}
  for stage in runs:
    models[stage], params[stage] = trellis.load_checkpoint(out / STAGES[stage])
  plan = DemoPlan(distill_steps={})
  scratch = Path(scratch or runs["ss"] / "ship_eval")
  digests = {stage: checkpoint_digest(out / STAGES[stage]) for stage in runs}
  results = scoring.Results(scratch, {"plan": plan.to_dict(), "teachers": digests})
  sets = scoring.EvalSets.build(plan)
  samplers = ToySamplers(models["ss"], models["slat"], seed=plan.seed)
  layout = ChunkLayout(plan.chunk_shapes, plan.chunk_voxels, plan.chunk_parents)
  reference = results.get("reference", "real") or scoring.reference_rows(sets, plan, results)

  def measure(steps, w):
    m = Method(f"teacher_{steps}" + (f"_w{w:g}" if w else ""), "teacher", steps, w)
    log(f"evaluating {m.label} ...")
    stage1 = results.get("stage1", m.name) or scoring.stage1(samplers, params["ss"], sets, m, results)
    stage2 = results.get("stage2", m.name) or scoring.stage2(samplers, params["slat"], sets, m, layout, results)
    pipe = results.get("pipeline", m.name) or scoring.pipeline(samplers, params["slat"], sets, m, layout,
                                                                  plan.stage2_per_condition, results)
    return {"label": m.label, "steps": steps, "w": w, "nfe": m.nfe, "stage1": stage1["metrics"],
            "stage2": stage2["metrics"], "pipeline_stage2": pipe["metrics"]["stage2"]}

  by_w = {w: measure(25, w) for w in GUIDANCE_WEIGHTS}
  best = {"ss": min(GUIDANCE_WEIGHTS, key=lambda w: by_w[w]["stage1"]["1nna"] - by_w[w]["stage1"]["fidelity"]),
          "slat": min(GUIDANCE_WEIGHTS, key=lambda w: by_w[w]["stage2"]["fd"])}
  by_steps = {w: {k: by_w[w] if k == 25 else measure(k, w) for k in STEP_COUNTS}
              for w in sorted({0.0, *best.values()})}
  rows = {**{f"teacher_25_w{w:g}": r for w, r in by_w.items()},
          **{f"teacher_{k}_w{w:g}": r for w, per in by_steps.items() for k, r in per.items()}}
  spread = results.get("spread", "teacher_25") or scoring.seed_spread(
      samplers, params["ss"], sets, Method("teacher_25", "teacher", 25), plan, results)
  figures.guidance_and_steps(out / "guidance_and_steps.png", by_w, by_steps, best, reference)
  smoke = smoke_samples(models["ss"], params["ss"], models["slat"], params["slat"], cfg_strength=best["ss"])
  (out / "smoke.json").write_text(json.dumps(smoke) + "\n")

  summaries = {stage: run_summary(run) for stage, run in runs.items()}
  for stage, run in runs.items():
    figures.training_curves(out / f"{stage}_loss.png", {f"{STAGES[stage]} teacher": training_curve(run)})
    quality = sorted((run / "curve").glob("curve_*.png")) if (run / "curve").is_dir() else []
    for path in quality:
      shutil.copy(path, out / f"{stage}_quality_{path.stem.removeprefix('curve_')}.png")
  metrics = {"weights": weights, "rows": rows, "best_w": best, "guidance_weights": GUIDANCE_WEIGHTS,
             "step_counts": STEP_COUNTS, "reference": reference, "teacher_25_seed_spread": spread["runs"],
             "runs": summaries, "plan": plan.to_dict(), "condition_table": table}
  (out / "metrics.json").write_text(json.dumps(scoring.jsonable(metrics), indent=1) + "\n")
  markdown = metrics_table(by_w, by_steps, best, reference, spread["runs"])
  (out / "metrics.md").write_text(markdown)
  return markdown


def metrics_table(by_w: dict, by_steps: dict, best: dict, reference: dict, spread: list) -> str:
  """Markdown: the guidance sweep, the step sweeps, then the reference rows and the seed spreads."""
  header = ["| sampler | NFE | 1-NNA (0.5 ideal) | COV | fidelity | stage 2 FD, real structures | stage 2 1-NNA | "
            "stage 2 FD, own stage-1 samples | stage 2 RMSE to the mean |", "|---|---|---|---|---|---|---|---|---|"]

  def row(r):
    s1, s2, p2 = r["stage1"], r["stage2"], r["pipeline_stage2"]
    return (f"| {r['label']} | {r['nfe']} | {s1['1nna']:.3f} | {s1['cov']:.3f} | {s1['fidelity']:.3f} | "
            f"{s2['fd']:.3f} | {s2['one_nna']:.3f} | {p2['fd']:.3f} | {s2['rmse']:.3f} |")

  real, real2 = reference["second_real"], reference["stage2_real"]
  ideal = (f"| second real set (the ideal) | - | {real['1nna']:.3f} | {real['cov']:.3f} | {real['fidelity']:.3f} | "
           f"{real2['fd']:.3f} | {real2['one_nna']:.3f} | - | {real2['rmse']:.3f} |")
  lines = ["## Against the guidance weight w (25 Euler steps)", "", *header, *(row(r) for r in by_w.values()), ideal, "",
           f"Best w: stage 1 (lowest 1-NNA - fidelity) {best['ss']:g}, stage 2 (lowest FD) {best['slat']:g}.", ""]
  for w, per in by_steps.items():
    lines += [f"## Against the number of Euler steps, w = {w:g}", "", *header, *(row(r) for r in per.values()), ""]
  lines += ["## Spread", "", "Mean +- standard deviation: the teacher at 25 steps (w = 0) over sampling seeds, "
            "real sets over dataset seeds.", "", "| | 1-NNA | COV | MMD | fidelity |", "|---|---|---|---|---|"]
  teacher = [by_w[0.0]["stage1"]] + list(spread)
  for name, runs in ((f"teacher, 25 steps, {len(teacher)} seeds", teacher),
                     (f"real sets, {len(reference['fresh_real'])} seeds", reference["fresh_real"])):
    cells = [f"{np.mean([r[k] for r in runs]):.3f} +- {np.std([r[k] for r in runs]):.3f}"
             for k in ("1nna", "cov", "mmd", "fidelity")]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"

