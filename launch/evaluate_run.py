"""Quality against training steps: evaluates every checkpoint of a toy training run (a teacher or a
distilled student) on one small fixed set.

    python launch/evaluate_run.py --workdir=/tmp/ss_teacher --steps=25          # a teacher
    python launch/evaluate_run.py --workdir=/tmp/ss_mdt --steps=1,2 --cfg=0     # a student

Stage 1 (ss): 1-NNA, coverage, MMD and family fidelity of `per_condition` shapes for each of the 24
toy conditions against held-out shapes of the same conditions (mdt_jax.eval); stage 2 (slat): the
feature RMSE of features generated on real held-out structures. The reference row (a second real
set for stage 1) is scored once. Each checkpoint's EMA (`--ema=-1`: the raw params) is scored as it
is found and written to <workdir>/curve/step<k>.json (a rerun, or a run still training, scores only
new checkpoints); then curve.json, curve.png and a table on stdout. Keep the checkpoints with
`--config.keep_period=N` when training.
"""
import json
from pathlib import Path

import jax
import matplotlib
import numpy as np
from absl import app, flags

matplotlib.use("Agg")
from matplotlib import pyplot as plt

from configs import models as model_configs
from conversion import trellis
from mdt_jax import cli, stages
from mdt_jax.data import toy_condition
from mdt_jax.eval.scoring import EvalSets, real_scores, sample_and_score
from mdt_jax.demo.plan import DemoPlan, Method
from mdt_jax.generation.toy_sampling import ChunkLayout, ToySamplers
from mdt_jax.train import checkpoints

_WORKDIR = flags.DEFINE_string("workdir", None, "A launch/train.py run directory on the toy dataset.", required=True)
_STEPS = flags.DEFINE_list("steps", ["25"], "Euler step counts to score each checkpoint at.")
_CFG = flags.DEFINE_list("cfg", ["0"], "Guidance scales w.")
_EMA = flags.DEFINE_integer("ema", 0, "Index into config.ema_rates of the weights scored; -1: the raw params.")
_PER_CONDITION = flags.DEFINE_integer("per_condition", 8, "Stage 1: shapes per toy condition (24 conditions).")
_STRUCTURES = flags.DEFINE_integer("structures_per_condition", 4, "Stage 2: real structures per condition.")
_FIDELITY_SHAPES = flags.DEFINE_integer("fidelity_shapes", 4000, "Toy train shapes labelling family fidelity.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling noise seed.")

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


def main(argv):
  del argv
  workdir = Path(_WORKDIR.value)
  try:
    config = json.loads((workdir / "config.json").read_text())
  except (OSError, ValueError) as e:
    raise ValueError(f"--workdir {workdir}: its config.json is unreadable ({e})") from e
  stage = stages.get(config["stage"], field=f"{workdir / 'config.json'}: stage")
  if config["data"]["dataset"] != "toy":
    raise app.UsageError(f"{workdir}: evaluate_run scores toy runs; config.data.dataset is {config['data']['dataset']!r}")
  model = run_model(config)
  toy = {name: trellis.build_model(c) for name, c in (("ss", model_configs.SS_TOY), ("slat", model_configs.SLAT_TOY))}
  toy[stage.name] = model
  samplers = ToySamplers(toy["ss"], toy["slat"], seed=_SEED.value)
  plan = DemoPlan(distill_steps={}, conditions=tuple(range(toy_condition.NUM_CONDITIONS)),
                  per_condition=_PER_CONDITION.value, stage2_per_condition=_STRUCTURES.value,
                  fidelity_train_shapes=_FIDELITY_SHAPES.value)
  sets = EvalSets.build(plan)
  layout = ChunkLayout(plan.chunk_shapes, plan.chunk_voxels, plan.chunk_parents)
  methods = [Method(f"steps{s}_w{w}", "run", int(s), float(w)) for w in _CFG.value for s in _STEPS.value]
  which = "raw" if _EMA.value < 0 else f"ema{config['ema_rates'][_EMA.value]}"

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
      weights = jax.device_put(params if _EMA.value < 0 else emas[_EMA.value])
      stored = {m.name: sample_and_score(stage, samplers, sets, layout, weights, m)[0] for m in methods}
      path.write_text(json.dumps(stored, indent=1))
    for m in methods:
      curve[m.name][str(step)] = stored[m.name]
    print(f"step {step}: " + "; ".join(f"{name} " + ", ".join(f"{k} {stored[name][k]:.3f}" for k in stage.metrics)
                                      for name in stored), flush=True)
  print("real vs real: " + ", ".join(f"{k} {reference[k]:.3f}" for k in stage.metrics))
  (out / f"curve_{which}.json").write_text(json.dumps({"weights": which, "reference": reference, "curve": curve,
                                                       "per_condition": plan.per_condition}, indent=1))
  plot(out / f"curve_{which}.png", stage, curve, reference)


if __name__ == "__main__":
  cli.run(main)
