"""Quality against training steps (launch/evaluate_run.py): every checkpoint of a toy training run (a
teacher or a distilled student) scored on one small fixed set.

Stage 1 (ss): 1-NNA, coverage, MMD and family fidelity of `per_condition` shapes for each of the 24
toy conditions against held-out shapes of the same conditions (mdt_jax.eval); stage 2 (slat): the
feature distribution and RMSE of features generated on real held-out structures. The reference row
(the stage's real-vs-real row) is scored once. Each checkpoint's weights (an EMA, or the raw params)
are scored as they are found and written to <workdir>/curve/step<k>_<weights>.json (a rerun, or a run
still training, scores only new checkpoints); then curve_<weights>.json, curve_<weights>.png and a line
per checkpoint.
"""
import json
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
from matplotlib import pyplot as plt

from conversion import trellis
from mdt_jax import stages
from mdt_jax.demo.plan import DemoPlan, Method
from mdt_jax.eval.scoring import EvalSets, real_scores, sample_and_score
from mdt_jax.generation.toy_sampling import ChunkLayout, ToySamplers
from mdt_jax.train import checkpoints


def run_model(config):
  """The run's student architecture: config.model for a fresh run, else the teacher checkpoint's."""
  if config["model"]["name"]:
    return trellis.build_model(config["model"])
  return trellis.load_model(config["teacher_checkpoint"])[0]


def plot(path: Path, stage: stages.Stage, curve: dict, reference: dict):
  keys = stage.metrics
  fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.0), squeeze=False)
  for ax, key in zip(axes[0], keys):
    for name, points in curve.items():
      steps = sorted(points, key=int)
      ax.plot([int(s) for s in steps], [points[s][key] for s in steps], marker="o", label=name)
    if key in reference:
      ax.axhline(reference[key], color="grey", linestyle="--", label="real vs real")
    ax.set(xlabel="training step", title=key)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def read_run_config(workdir: Path) -> dict:
  """The run's config.json (a ValueError naming the file when it is unreadable)."""
  try:
    return json.loads((Path(workdir) / "config.json").read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"--workdir {workdir}: its config.json is unreadable ({e})") from e


def evaluate_run(workdir: Path, config: dict, methods: list[Method], plan: DemoPlan, *, toy_models: dict,
                 ema: int = 0, seed: int = 0, log=print) -> dict:
  """Scores every checkpoint of the toy run in `workdir` (its `config`, read_run_config) with each
  sampler of `methods` on `plan`'s sets. toy_models: {stage name: TRELLIS model config} of both toy
  stages (the run's own stage uses the run's model); ema: index into config.ema_rates of the weights
  scored, -1 the raw params; seed: the sampling noise's. -> curve_<weights>.json's content."""
  workdir = Path(workdir)
  stage = stages.get(config["stage"], field=f"{workdir / 'config.json'}: stage")
  toy = {name: trellis.build_model(c) for name, c in toy_models.items()}
  toy[stage.name] = run_model(config)
  samplers = ToySamplers(toy["ss"], toy["slat"], seed=seed)
  sets = EvalSets.build(plan)
  layout = ChunkLayout(plan.chunk_shapes, plan.chunk_voxels, plan.chunk_parents)
  which = "raw" if ema < 0 else f"ema{config['ema_rates'][ema]}"

  out = workdir / "curve"
  out.mkdir(exist_ok=True)
  reference = real_scores(stage, sets)
  curve = {m.name: {} for m in methods}
  for step in checkpoints.saved_steps(workdir):
    path = out / f"step{step}_{which}.json"
    if path.exists():
      stored = json.loads(path.read_text())
    else:
      params, emas = checkpoints.restore_weights(workdir, step)
      weights = jax.device_put(params if ema < 0 else emas[ema])
      stored = {m.name: sample_and_score(stage, samplers, sets, layout, weights, m)[0] for m in methods}
      path.write_text(json.dumps(stored, indent=1))
    for m in methods:
      curve[m.name][str(step)] = stored[m.name]
    log(f"step {step}: " + "; ".join(f"{name} " + ", ".join(f"{k} {stored[name][k]:.3f}" for k in stage.metrics)
                                    for name in stored))
  log("real vs real: " + ", ".join(f"{k} {reference[k]:.3f}" for k in stage.metrics))
  result = {"weights": which, "reference": reference, "curve": curve, "per_condition": plan.per_condition}
  (out / f"curve_{which}.json").write_text(json.dumps(result, indent=1))
  plot(out / f"curve_{which}.png", stage, curve, reference)
  return result
