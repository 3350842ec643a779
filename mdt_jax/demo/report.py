"""report.md and its figures from the demo's stored results; every number is read from this run's
results (or the stored results of an earlier run in the same workdir, which the report says)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from mdt_jax import stages
from mdt_jax.demo import distill_runs, figures
from mdt_jax.demo.plan import STAGES, STUDENTS
from mdt_jax.generation.toy_sampling import packed_coords

_NAMES = {s.name: s.label for s in stages.STAGES}
_CONFIG_FIELDS = ("objective", "distill_type", "distill_interval", "cfg_teacher_vm", "cfg_teacher_vd", "lambda_vm",
                  "lambda_vd", "d_norm", "lr", "ema_rates", "batch_size_per_device", "batch_split")


def _f(x, digits=3):
  return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{digits}f}"


def _ms(seconds):
  return f"{1000 * seconds:.1f}"


def markdown_table(header: list[str], rows: list[list]) -> list[str]:
  return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
      "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _spread(runs: list[dict], key: str):
  values = np.array([r[key] for r in runs])
  return values.mean(), (values.std(ddof=1) if len(values) > 1 else 0.0)


def _verdict(ours: float, other: float, sd: float, lower_is_better: bool = True) -> str:
  diff = (other - ours) if lower_is_better else (ours - other)
  if abs(diff) <= 2 * sd:
    return f"no measurable difference (|diff| {abs(diff):.3f} <= 2 sd = {2 * sd:.3f})"
  verdict = f"MDT-dist better by {diff:.3f}" if diff > 0 else f"MDT-dist worse by {-diff:.3f}"
  return f"{verdict} (2 sd = {2 * sd:.3f})"


def _lower(ours: float, other: float) -> str:
  if round(ours, 3) == round(other, 3):
    return f"{ours:.3f} vs {other:.3f}: equal to 3 decimals"
  return f"{ours:.3f} vs {other:.3f}: MDT-dist {'lower (better)' if ours < other else 'higher (worse)'}"


def _renders(workdir: Path, plan, sets, methods, resolution: int) -> list[str]:
  """Side-by-side renders of the first sample of the first `render_shapes` conditions, per method."""
  conditions = plan.conditions[:plan.render_shapes]
  picks = [int(np.flatnonzero(sets.cond_ids == c)[0]) for c in conditions]
  real = [np.argwhere(sets.reference.occupancy[np.flatnonzero(sets.reference.cond_id == c)[0]]) for c in conditions]
  rows1 = [("real (reference set)", [(v, figures.height_rgb(v, resolution)) for v in real])]
  rows2 = [("real features", [])]
  rows3 = []
  picks2 = [int(np.flatnonzero(sets.structure_cond_ids == c)[0]) for c in conditions]
  real2 = np.load(workdir / "samples" / "reference_stage2.npz")
  for i in picks2:
    rows = real2["coords"][:, 0] == i
    rows2[0][1].append((real2["coords"][rows, 1:], figures.feature_rgb(real2["feats"][rows])))
  for m in methods:
    s1 = np.load(workdir / "samples" / f"stage1_{m.name}.npz")["occupancy"]
    rows1.append((m.label, [(np.argwhere(s1[i]), figures.height_rgb(np.argwhere(s1[i]), resolution)) for i in picks]))
    for part, picked, out in (("stage2", picks2, rows2), ("pipeline", picks, rows3)):
      data = np.load(workdir / "samples" / f"{part}_{m.name}.npz")
      if part == "pipeline":  # rows of the pipeline's samples are numbered within its subset
        picked = [int(np.flatnonzero(data["sample_id"] == i)[0]) for i in picked]
      cells = []
      for i in picked:
        rows = data["coords"][:, 0] == i
        cells.append((data["coords"][rows, 1:], figures.feature_rgb(data["feats"][rows])))
      out.append((m.label, cells))
  files = []
  for name, rows, title in (("renders_stage1.png", rows1, "stage 1: generated structures (colour: height)"),
                            ("renders_stage2.png", rows2, "stage 2 on real structures (colour: generated colours)"),
                            ("renders_pipeline.png", rows3, "pipeline: structures and features both generated")):
    figures.render_grid(workdir / name, rows, resolution, title)
    files.append(name)
  return files


def write(workdir: Path, c: dict) -> Path:
  """Writes report.md, quality_vs_steps.png, training_curves.png and the renders; -> report.md."""
  workdir, plan, rows, latency = Path(workdir), c["plan"], c["rows"], c["latency"]["seconds"]
  methods = plan.methods()
  by_name = {m.name: m for m in methods}
  ref, sets = c["reference"], c["sets"]
  np.savez_compressed(workdir / "samples" / "reference_stage2.npz", **_real_stage2(sets))
  lines = ["# mdt-jax demo: MDT-dist against the CM baseline and naive Euler on the toy benchmark", ""]
  lines += [f"Command: `{c['command']}`  ", f"Workdir: `{c['workdir']}`  ",
            f"Written {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime())}; this invocation took "
            f"{c['run_seconds'] / 60:.1f} min (parts stored by an earlier invocation in this workdir were read back, "
            f"not rerun; their times are those of the run that computed them).  ",
            f"Machine: {c['machine']['platform']}, {c['machine']['cpus']} CPUs, JAX {c['machine']['jax']} "
            f"({c['machine']['backend']}); load average at start {c['machine']['load_at_start'][0]:.1f}, at end "
            f"{c['machine']['load_at_end'][0]:.1f} (other jobs share this machine: absolute times are slower than "
            f"on an idle one, ratios measured side by side are comparable).", ""]

  lines += ["## Method", "",
            f"Teachers (TRELLIS-format checkpoints): stage 1 `{c['teachers']['ss']}` ({c['params_count']['ss']:,} "
            f"params), stage 2 `{c['teachers']['slat']}` ({c['params_count']['slat']:,} params). Each stage's student "
            "starts as a copy of its teacher and is distilled with MDT-dist (velocity matching + velocity "
            "distillation, objective `vm_vd`) and, with the same number of optimiser steps, with the consistency-"
            "distillation baseline (objective `cm`), using the toy distillation configs "
            "(`configs/distill.py:ss_toy`, `:slat_toy`). Samplers are Euler on the rectified flow from t = 1 to 0; "
            "the students are sampled with the same sampler at 1 and 2 steps; naive Euler is the teacher at 1, 2 "
            f"and 4 steps. The teacher's reference is 25 steps without guidance and with classifier-free guidance "
            f"w = {plan.cfg_strength:g} on every step (v = (1 + w) v(c) - w v(0)), the stage-1 teacher's best "
            "weight (teachers/metrics.md: larger w keeps the family fidelity and costs diversity). NFE counts network evaluations per sample and "
            "stage (2 per guided step).", "",
            f"Evaluation (the same conditions and noises for every method): stage 1 generates {plan.per_condition} "
            f"shapes for each of {len(plan.conditions)} conditions (ids {list(plan.conditions)}: every family, "
            f"middle size) and scores them per condition against the test split's first {plan.per_condition} shapes "
            "of the condition with a 1 - IoU distance (1-NNA: lower is better down to the real-vs-real floor; "
            "COV higher is better; MMD rewards blurry mean shapes, so read 1-NNA and COV first; family fidelity "
            f"classified by the nearest of {plan.fidelity_train_shapes:,} toy training shapes). Stage 2 generates "
            f"features on {len(sets.structures)} real structures ({plan.stage2_per_condition} per condition) and "
            "scores them as a distribution against the real features of those structures (FD and 1-NNA of "
            "per-shape descriptors), and against the conditional mean of the features those voxels imply "
            "(RMSE in feature units, each channel ~unit variance). The pipeline runs stage 1, the toy decoder (fold.latent_to_occupancy: unfold, > 0), "
            "and stage 2 of the same method on the generated voxels: its structures are the stage-1 row's samples, "
            f"its stage 2 is scored on the first {plan.stage2_per_condition} of each condition (FD against the "
            "real features of the real structures; RMSE against the mean the generated voxels imply).", "",
            f"Latency: median of {c['latency']['repeats']} calls at batch 1 after a warm-up call (compilation "
            "excluded), every method measured in one block of this run; stage 2 on the first stage-2 structure; the "
            "pipeline end to end (stage 1, decode, voxel list, stage 2) on the first condition (its stage 2 runs on "
            "the method's own structure, so its cost also depends on how many voxels that structure has).", ""]

  lines += ["## Distillation runs", ""]
  table, curves = [], {}
  for stage in STAGES:
    for student in STUDENTS:
      run = c["runs"][(stage, student)]
      directory = distill_runs.run_dir(workdir, stage, student)
      curves[f"{stage} {student}"] = distill_runs.training_curve(directory)
      final = curves[f"{stage} {student}"].get("loss", ([], [None]))[1][-1]
      resumed = f" (resumed from step {run['resumed_from']})" if run["resumed_from"] else ""
      split = run.get("batch_split", 1)
      batch = f"{run['batch_size']}" + (f" ({split} micro-batches)" if split > 1 else "")
      table.append([_NAMES[stage], f"{'MDT-dist' if student == 'mdt' else 'CM'} (`{run['objective']}`)", run["steps"],
                    batch, f"{run['wall_s']:.0f}{resumed}", f"{run['wall_s'] / run['steps']:.2f}", _f(final, 4)])
  lines += markdown_table(["stage", "student", "steps", "batch", "wall time (s)", "s / step (incl. compile)", "final loss"],
                  table)
  config = json.loads((distill_runs.run_dir(workdir, "ss", "mdt") / "config.json").read_text())
  lines += ["", "Settings of the MDT-dist runs (stage 1; stage 2 alike but for the batch): " +
            ", ".join(f"`{k}` {config[k]}" for k in _CONFIG_FIELDS if k in config) + ". Training curves: "
            "`training_curves.png` (from each run's metrics.jsonl).", ""]
  figures.training_curves(workdir / "training_curves.png", curves)

  lines += _stage1_section(rows, ref, latency, methods, plan)
  lines += _stage2_section(rows, ref, latency, methods)
  lines += _pipeline_section(rows, ref, latency, methods)
  lines += _speed_section(latency, by_name, plan)
  lines += _comparison_section(rows, plan)

  _quality_plot(workdir, rows, ref, by_name, plan)
  renders = _renders(workdir, plan, sets, methods, sets.resolution)
  lines += ["## Files", "", "- `quality_vs_steps.png`: quality against sampling steps; `training_curves.png`.",
            "- " + ", ".join(f"`{r}`" for r in renders) + ": samples side by side, a row per method, the first "
            "sample of each of the first conditions (same noise in every row).",
            "- `samples/stage1_<method>.npz` (latents [N, 8, 8, 8, 8] float32, occupancy [N, 16, 16, 16], "
            "cond_id), `samples/stage2_<method>.npz` and `samples/pipeline_<method>.npz` (coords [n, 4] (sample, "
            "x, y, z), feats [n, 8], cond_id; the pipeline's sample_id: which stage-1 sample each is), "
            "`samples/reference_stage2.npz` (the real features).",
            "- `results/<part>/<method>.json`: every metric, per condition too; `runs/<stage>_<student>/`: the "
            "distillation runs (checkpoints, metrics.jsonl, export/ in TRELLIS format).", ""]
  path = workdir / "report.md"
  path.write_text("\n".join(lines))
  return path


def _real_stage2(sets) -> dict:
  return {"coords": packed_coords(sets.structures), "feats": np.concatenate(sets.structure_feats),
          "cond_id": sets.structure_cond_ids}


def _stage1_cells(m):
  return [_f(m["1nna"]), _f(m["cov"]), _f(m["mmd"]), _f(m["fidelity"])]


def _stage1_section(rows, ref, latency, methods, plan) -> list[str]:
  table = []
  for m in methods:
    r = rows["stage1"][m.name]
    table.append([m.label, m.steps, m.nfe, _ms(latency[m.name]["stage1"]), *_stage1_cells(r["metrics"])])
  second = ref["second_real"]
  table.append(["**real: second real set** (the ideal)", "", "", "", *_stage1_cells(second)])
  fresh = ref["fresh_real"]
  table.append([f"real: {len(fresh)} fresh real set(s), mean +- sd", "", "", "",
                *[f"{a:.3f} +- {b:.3f}" for a, b in (_spread(fresh, k) for k in ("1nna", "cov", "mmd", "fidelity"))]])
  table.append(["1-NNA expected of exchangeable sets (floor)", "", "", "", _f(second["1nna_exchangeable"]),
                "", "", ""])
  lines = [f"## {_NAMES['ss']}", ""]
  lines += markdown_table(["method", "steps", "NFE", "latency (ms, batch 1)", "1-NNA", "COV", "MMD", "fidelity"], table)
  spread = []
  for m in plan.spread_methods():
    runs = [rows["stage1"][m.name]["metrics"], *rows["spread"][m.name]["runs"]]
    spread.append([m.label, len(runs), *[f"{a:.3f} +- {b:.3f}" for a, b in (_spread(runs, k) for k in
                                                                           ("1nna", "cov", "mmd", "fidelity"))]])
  lines += ["", f"Spread over sampling seeds (seed 0 is the row above; seeds 1..{plan.spread_seeds} added), "
            "mean +- sd:", ""]
  lines += markdown_table(["method", "seeds", "1-NNA", "COV", "MMD", "fidelity"], spread) + [""]
  return lines


def _stage2_cells(m):
  return [_f(m["fd"]), _f(m["one_nna"]), _f(m["rmse"]), _f(m["rmse_height"]), _f(m["rmse_depth"]),
          _f(m["rmse_normal"]), _f(m["rmse_colour"])]


def _stage2_section(rows, ref, latency, methods) -> list[str]:
  table = []
  for m in methods:
    r = rows["stage2"][m.name]
    table.append([m.label, m.steps, m.nfe, _ms(latency[m.name]["stage2"]), *_stage2_cells(r["metrics"])])
  real = ref["stage2_real"]
  table.append(["**real: second real set** (the ideal)", "", "", "", *_stage2_cells(real)])
  table.append(["predicting zeros (the conditional mean's RMS)", "", "", "", "", "", _f(real["target_rms"]),
                _f(real["target_rms_height"]), _f(real["target_rms_depth"]), _f(real["target_rms_normal"]),
                _f(real["target_rms_colour"])])
  lines = [f"## {_NAMES['slat']}, on real structures", ""]
  lines += markdown_table(["method", "steps", "NFE", "latency (ms, batch 1)", "FD", "1-NNA", "RMSE to the mean",
                           "height", "depth", "normal", "colour"], table)
  return lines + ["", "FD and 1-NNA (eval.stage2_distribution): the generated features against the real features of "
                  "the same structures, as distributions of per-shape descriptors; lower is better, read against the "
                  "second real set. RMSE: against the conditional mean of the features (zero colour gradient), exact "
                  "for height, depth and normal; for colour it rewards predicting the mean. No sampling-seed spread is "
                  "measured for stage 2.", ""]


def _pipeline_section(rows, ref, latency, methods) -> list[str]:
  table = []
  for m in methods:
    r = rows["pipeline"][m.name]["metrics"]
    table.append([m.label, m.steps, 2 * m.nfe, _ms(latency[m.name]["pipeline"]), *_stage1_cells(r["stage1"]),
                  _f(r["stage2"]["fd"]), _f(r["stage2"]["rmse"]), r["stage2"]["num_empty"]])
  table.append(["**real structures, real features**", "", "", "", *_stage1_cells(ref["second_real"]),
                _f(ref["stage2_real"]["fd"]), _f(ref["stage2_real"]["rmse"]), 0])
  lines = ["## The two-stage pipeline, end to end", ""]
  lines += markdown_table(["method (both stages)", "steps / stage", "NFE (both stages)", "latency (ms, batch 1)", "1-NNA",
                   "COV", "MMD", "fidelity", "stage-2 FD", "stage-2 RMSE to the mean", "empty shapes"], table)
  return lines + [""]


def _speed_section(latency, by_name, plan) -> list[str]:
  guided, one = by_name[f"teacher_{plan.teacher_steps}_cfg"], by_name["mdt_1"]
  limit = guided.nfe / one.nfe
  table = []
  for part, label in (("stage1", _NAMES["ss"]), ("stage2", _NAMES["slat"]), ("pipeline", "pipeline (both stages)")):
    a, b = latency[guided.name][part], latency[one.name][part]
    label += (f" (voxels: {latency[guided.name]['pipeline_voxels']} and {latency[one.name]['pipeline_voxels']})"
              if part == "pipeline" else "")
    table.append([label, _ms(a), _ms(b), f"{a / b:.1f}x", f"{limit:.0f}x"])
  lines = ["## Speed: the guided teacher against the 1-step student", ""]
  lines += markdown_table(["part", f"{guided.label} (ms)", f"{one.label} (ms)", "measured ratio", "limit (NFE ratio)"], table)
  return lines + ["", f"The limit is the ratio of network evaluations: {guided.nfe} against {one.nfe} per stage "
                  f"({limit:.0f}x per stage, and so {limit:.0f}x for the pipeline). A measured ratio below it is the "
                  "fixed cost of a call that does not shrink with the steps (dispatch, noise, host transfers; in "
                  "stage 2 the sparse neighbour lists; in the pipeline the decoding and the voxel list). In the "
                  "pipeline each method's stage 2 runs on its own structure, whose voxel count (given beside it) "
                  "also sets its cost.", ""]


def _comparison_section(rows, plan) -> list[str]:
  lines = ["## MDT-dist against CM and naive Euler at the same step count", ""]
  table = []
  for k in (1, 2):
    mdt = rows["stage1"][f"mdt_{k}"]["metrics"]
    sds = [_spread([rows["stage1"][f"{s}_{k}"]["metrics"], *rows["spread"][f"{s}_{k}"]["runs"]], "1nna")[1]
           for s in STUDENTS]
    sd = max(sds)
    for other in (f"cm_{k}", f"euler_{k}"):
      o1 = rows["stage1"][other]["metrics"]["1nna"]
      o2 = rows["stage2"][other]["metrics"]["fd"]
      op = rows["pipeline"][other]["metrics"]["stage2"]["fd"]
      m2 = rows["stage2"][f"mdt_{k}"]["metrics"]["fd"]
      mp = rows["pipeline"][f"mdt_{k}"]["metrics"]["stage2"]["fd"]
      table.append([k, "CM" if other.startswith("cm") else "naive Euler",
                    f"{mdt['1nna']:.3f} vs {o1:.3f}: {_verdict(mdt['1nna'], o1, sd)}",
                    _lower(m2, o2), _lower(mp, op)])
  lines += markdown_table(["steps", "against", "stage-1 1-NNA (MDT-dist vs other)", "stage-2 FD", "pipeline stage-2 FD"],
                  table)
  return lines + ["", "sd: the larger of the MDT-dist and CM 1-NNA spreads over sampling seeds at that step count "
                  "(naive Euler's spread is not measured; it is taken to be the same). A difference within 2 sd is "
                  "not distinguishable from sampling noise with these set sizes.", ""]


def _quality_plot(workdir, rows, ref, by_name, plan):
  def series(part, key):
    out = {}
    for who, label in (("euler", "naive Euler"), ("cm", "CM"), ("mdt", "MDT-dist")):
      names = [n for n, m in by_name.items() if n.startswith(who + "_")]
      out[label] = ([by_name[n].steps for n in names], [key(rows[part][n]["metrics"]) for n in names])
    for name, label in ((f"teacher_{plan.teacher_steps}", "teacher"),
                        (f"teacher_{plan.teacher_steps}_cfg", f"teacher, w = {plan.cfg_strength:g}")):
      out[label] = ([plan.teacher_steps], [key(rows[part][name]["metrics"])])
    return out
  panels = [
      {"title": "stage 1: 1-NNA (lower is better)", "ylabel": "1-NNA", "series": series("stage1", lambda m: m["1nna"]),
       "lines": {"real vs real": ref["second_real"]["1nna"]}},
      {"title": "stage 1: coverage (higher is better)", "ylabel": "COV", "series": series("stage1", lambda m: m["cov"]),
       "lines": {"real vs real": ref["second_real"]["cov"]}},
      {"title": "stage 2 on real structures: FD (lower is better)", "ylabel": "FD",
       "series": series("stage2", lambda m: m["fd"]), "lines": {"second real set": ref["stage2_real"]["fd"]}},
      {"title": "pipeline: stage-2 FD", "ylabel": "FD", "series": series("pipeline", lambda m: m["stage2"]["fd"]),
       "lines": {"second real set": ref["stage2_real"]["fd"]}},
  ]
  figures.quality_vs_steps(workdir / "quality_vs_steps.png", panels)
