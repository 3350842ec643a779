"""study.md and its figures from the study's stored results (mdt_jax/demo/study.py): per stage, a
table of every arm (mean and sample standard deviation over training seeds) with the reference rows,
quality against training steps, and renders of the final 1-step samples."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mdt_jax import stages  # noqa: E402
from mdt_jax.demo import figures  # noqa: E402
from mdt_jax.demo.report import markdown_table  # noqa: E402
from mdt_jax.demo.study import SAMPLE_STEPS, arms  # noqa: E402
from mdt_jax.eval import scoring  # noqa: E402

STAGE_NAMES = {"ss": "Stage 1 (sparse structure, dense 8x8x8x8 latents)",
               "slat": "Stage 2 (structured latents on real structures)"}
EXTRA_COLUMNS = {"ss": ("cov", "fidelity"), "slat": ()}  # 1-step columns beside the headline metric
RENDER_TITLES = {"ss": "stage 1: structures (colour: height)",
                 "slat": "stage 2 on real structures (colour: generated colour channels)"}
RENDER_COUNT = 8
WEIGHT_LABELS = {"ema0": "EMA 0.99", "ema1": "EMA 0.9"}  # the headline columns use the raw weights
CURVE_PANELS = ((1, "raw"), (2, "raw"), (1, "ema0"))   # (sampling steps, weights) per panel


def load(workdir: Path, stage: stages.Stage) -> tuple[dict | None, dict]:
  """-> (reference.json or None, {arm name: {seed: result}}) of the stage's stored results."""
  root = Path(workdir) / "results" / stage.name
  ref_path = root / "reference.json"
  reference = json.loads(ref_path.read_text()) if ref_path.exists() else None
  results = {}
  for arm in arms(stage):
    for path in sorted((root / arm.name).glob("seed*.json")):
      results.setdefault(arm.name, {})[int(path.stem[4:])] = json.loads(path.read_text())
  return reference, results


def _stat(values: list[float]) -> tuple[float, float, int]:
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else float("nan"), len(values)


def _fmt(stat) -> str:
  mean, sd, n = stat
  if n == 0:
    return "-"
  return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {sd:.3f}"


def _final(result: dict, which: str, sampling_steps: int, key: str) -> float | None:
  entry = result["scores"].get(f"{result['record']['steps']}/{which}/{sampling_steps}")
  return None if entry is None else entry[key]


def _curve(result: dict, sampling_steps: int, key: str, which: str = "raw") -> dict[int, float]:
  out = {}
  for name, entry in result["scores"].items():
    step, w, s = name.split("/")
    if w == which and int(s) == sampling_steps:
      out[int(step)] = entry[key]
  return dict(sorted(out.items()))


def _collect(values) -> tuple[float, float, int]:
  values = [v for v in values if v is not None]
  return _stat(values) if values else (float("nan"), float("nan"), 0)


def _finished(seeds: dict) -> dict:
  """The seeds whose every checkpoint is scored (a run still training or being scored is left out)."""
  return {s: r for s, r in seeds.items() if f"{r['record']['steps']}/raw/{SAMPLE_STEPS[-1]}" in r["scores"]}


def stage_table(stage: stages.Stage, reference: dict | None, results: dict) -> list[str]:
  key = stage.headline
  extra = EXTRA_COLUMNS[stage.name]
  header = ["config", "what it tests", "seeds", "steps"] + [f"{key} {s}-step" for s in SAMPLE_STEPS] + [
      f"{k} 1-step" for k in extra] + [f"best {key} 1-step (at step)"] + [
      f"{label}: {key} 1 / 2-step" for label in WEIGHT_LABELS.values()] + ["train s/step (incl. compile)"]
  rows = []
  for arm in arms(stage):
    seeds = _finished(results.get(arm.name, {}))
    if not seeds:
      rows.append([f"`{arm.name}`", arm.why, 0, "-"] + ["not run"] * (len(header) - 4))
      continue
    runs = list(seeds.values())
    total = runs[0]["record"]["steps"]
    cells = [_fmt(_collect(_final(r, "raw", s, key) for r in runs)) for s in SAMPLE_STEPS]
    cells += [_fmt(_collect(_final(r, "raw", 1, k) for r in runs)) for k in extra]
    curves = [_curve(r, 1, key) for r in runs]
    common = sorted(set.intersection(*(set(c) for c in curves)))
    means = {step: np.mean([c[step] for c in curves]) for step in common}
    best = min(means, key=means.get)
    cells.append(f"{means[best]:.3f} ({best})")
    cells += [" / ".join(_fmt(_collect(_final(r, which, s, key) for r in runs)) for s in SAMPLE_STEPS)
              for which in WEIGHT_LABELS]
    cells.append(f"{np.mean([r['record']['wall_s'] / max(1, total - r['record']['resumed_from']) for r in runs]):.2f}")
    rows.append([f"`{arm.name}`" + ("" if arm.core else " (try)"), arm.why, len(runs), total] + cells)
  return markdown_table(header, rows)


def reference_table(stage: stages.Stage, reference: dict) -> list[str]:
  """The teacher's rows (mean ± sd over sampling seeds where there are two) and the real row."""
  keys = stage.metrics
  rows = []
  for steps, label in ((25, "teacher, 25 Euler steps"), (1, "naive Euler, 1 step (every arm at step 0)"),
                       (2, "naive Euler, 2 steps"), (4, "naive Euler, 4 steps")):
    runs = reference["teacher"][f"steps{steps}"]
    rows.append([label, steps, len(runs)] + [_fmt(_stat([r[k] for r in runs])) for k in keys])
  if "second_real" in reference:
    rows.append(["second real set (the ideal)", "-", "-"] + [f"{reference['second_real'][k]:.3f}" for k in keys])
  return markdown_table(["sampler", "NFE", "sampling seeds", *keys], rows)


def plot_curves(path: Path, stage: stages.Stage, reference: dict | None, results: dict) -> None:
  """Quality against training steps: a panel per CURVE_PANELS entry, one line per arm (mean over
  seeds, bars from the lowest to the highest seed), step 0 the teacher's naive Euler."""
  key = stage.headline
  fig, axes = plt.subplots(1, len(CURVE_PANELS), figsize=(5.5 * len(CURVE_PANELS), 4.2), squeeze=False)
  for ax, (sampling_steps, which) in zip(axes[0], CURVE_PANELS):
    euler = reference["teacher"][f"steps{sampling_steps}"][0][key] if reference else None
    for i, arm in enumerate(arms(stage)):
      runs = list(_finished(results.get(arm.name, {})).values())
      if not runs:
        continue
      curves = [_curve(r, sampling_steps, key, which) for r in runs]
      steps = sorted(set.intersection(*(set(c) for c in curves)))
      values = np.array([[c[s] for s in steps] for c in curves])
      if euler is not None:
        steps, values = [0] + steps, np.concatenate([np.full((len(values), 1), euler), values], 1)
      mean = values.mean(0)
      ax.errorbar(steps, mean, yerr=[mean - values.min(0), values.max(0) - mean], marker="o", markersize=3,
                  capsize=2, label=arm.name, linestyle="-" if arm.core else ":", color=f"C{i}")
    if reference:
      ax.axhline(np.mean([r[key] for r in reference["teacher"]["steps25"]]), color="k", linestyle="--",
                 linewidth=1, label="teacher, 25 steps")
      if "second_real" in reference:
        ax.axhline(reference["second_real"][key], color="grey", linestyle="-.", linewidth=1, label="real vs real")
    ax.set(xlabel="distillation step", ylabel=f"{key} (lower is better)",
           title=f"{stage.name}: {sampling_steps}-step sampling, {WEIGHT_LABELS.get(which, 'raw weights')}")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def render(path: Path, stage: stages.Stage, workdir: Path, sets, results: dict) -> None:
  """The first sample of each of the first RENDER_COUNT conditions: teacher, naive Euler and every
  arm's seed-0 final 1-step samples from the raw weights (same noise in every row)."""
  root = Path(workdir) / "results" / stage.name
  rows = []
  sources = [("teacher, 25 steps", root / "reference_steps25.npz"), ("naive Euler, 1 step", root / "reference_steps1.npz")]
  sources += [(f"{arm.name}, 1 step", root / arm.name / "seed0_steps1.npz") for arm in arms(stage)]
  if not stage.sparse:
    conditions = list(dict.fromkeys(sets.cond_ids.tolist()))[:RENDER_COUNT]
    picks = [int(np.flatnonzero(sets.cond_ids == c)[0]) for c in conditions]
    real = [np.argwhere(sets.reference.occupancy[np.flatnonzero(sets.reference.cond_id == c)[0]]) for c in conditions]
    rows.append(("real (reference set)", [(v, figures.height_rgb(v, sets.resolution)) for v in real]))
    for label, file in sources:
      if file.exists():
        occupancy = np.load(file)["samples"]
        rows.append((label, [(np.argwhere(occupancy[i]), figures.height_rgb(np.argwhere(occupancy[i]), sets.resolution))
                             for i in picks]))
  else:
    count = min(RENDER_COUNT, len(sets.structures))
    starts = np.cumsum([0] + [len(s) for s in sets.structures])
    rows.append(("real features", [(sets.structures[i], figures.feature_rgb(sets.structure_feats[i]))
                                   for i in range(count)]))
    for label, file in sources:
      if file.exists():
        feats = np.load(file)["samples"]
        rows.append((label, [(sets.structures[i], figures.feature_rgb(feats[starts[i]:starts[i + 1]]))
                             for i in range(count)]))
  figures.render_grid(path, rows, sets.resolution, RENDER_TITLES[stage.name])


def cpu_seconds(results: dict) -> tuple[float, float]:
  """(training seconds, evaluation seconds) summed over the stage's stored runs."""
  train = sum(r["record"]["wall_s"] for seeds in results.values() for r in seeds.values())
  evaluate = sum(e.get("eval_s", 0.0) for seeds in results.values() for r in seeds.values()
                 for e in r["scores"].values())
  return train, evaluate


def write(workdir: Path, plan, *, command: str = "") -> Path:
  """Writes <workdir>/study.md, study_curves_<stage>.png and study_renders_<stage>.png; -> study.md."""
  workdir = Path(workdir)
  lines = ["# mdt-jax toy benchmark study", "",
           f"Command: `{command}`  ", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} on {os.cpu_count()} CPUs.", "",
           f"Training seeds {list(plan.seeds)}; optimiser steps per run {plan.steps}; a checkpoint every "
           f"{plan.eval_every} steps is scored with the raw weights and with EMAs 0.99 and 0.9 at 1 and 2 "
           "sampling steps. Entries are mean ± sample sd over training seeds; the sampling noise is the "
           "same for every row. Headline columns: the final raw weights. Lower is better in every headline "
           "column. `best` picks the checkpoint with the lowest mean on the evaluation set itself, so it is "
           "optimistic; the final columns are the honest ones.", ""]
  sets = scoring.EvalSets.build(plan.eval_sets)
  for stage in stages.STAGES:
    reference, results = load(workdir, stage)
    if reference is None and not results:
      continue
    train_s, eval_s = cpu_seconds(results)
    lines += [f"## {STAGE_NAMES[stage.name]}", "",
              f"Stored runs: {sum(len(v) for v in results.values())}; training {train_s / 60:.1f} min and "
              f"scoring {eval_s / 60:.1f} min of wall time (compilation included).", ""]
    lines += stage_table(stage, reference, results) + [""]
    if reference:
      lines += ["Reference rows:", ""] + reference_table(stage, reference) + [""]
    plot_curves(workdir / f"study_curves_{stage.name}.png", stage, reference, results)
    render(workdir / f"study_renders_{stage.name}.png", stage, workdir, sets, results)
    lines += [f"![quality against distillation steps](study_curves_{stage.name}.png)", "",
              f"![final 1-step samples](study_renders_{stage.name}.png)", ""]
  path = workdir / "study.md"
  path.write_text("\n".join(lines))
  return path
