"""Quality against training steps: evaluates every checkpoint of a toy training run (a teacher or a
distilled student) on one small fixed set (mdt_jax/demo/curve.py says what is scored and written).

    python launch/evaluate_run.py --workdir=/tmp/ss_teacher --steps=25          # a teacher
    python launch/evaluate_run.py --workdir=/tmp/ss_mdt --steps=1,2 --cfg=0     # a student

Writes <workdir>/curve/step<k>_<weights>.json as each checkpoint is scored (a rerun, or a run still
training, scores only new checkpoints), then curve_<weights>.json, curve_<weights>.png and a line per
checkpoint on stdout. Keep the checkpoints with `--config.keep_period=N` when training.
"""
from pathlib import Path

from absl import app, flags

from configs import models as model_configs
from mdt_jax import cli
from mdt_jax.data import toy_condition
from mdt_jax.demo import curve
from mdt_jax.demo.plan import DemoPlan, Method

_WORKDIR = flags.DEFINE_string("workdir", None, "A launch/train.py run directory on the toy dataset.", required=True)
_STEPS = flags.DEFINE_list("steps", ["25"], "Euler step counts to score each checkpoint at.")
_CFG = flags.DEFINE_list("cfg", ["0"], "Guidance scales w.")
_EMA = flags.DEFINE_integer("ema", 0, "Index into config.ema_rates of the weights scored; -1: the raw params.")
_PER_CONDITION = flags.DEFINE_integer("per_condition", 8, "Stage 1: shapes per toy condition (24 conditions).")
_STRUCTURES = flags.DEFINE_integer("structures_per_condition", 4, "Stage 2: real structures per condition.")
_FIDELITY_SHAPES = flags.DEFINE_integer("fidelity_shapes", 4000, "Toy train shapes labelling family fidelity.")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling noise seed.")


def main(argv):
  del argv
  workdir = Path(_WORKDIR.value)
  config = curve.read_run_config(workdir)
  if config["data"]["dataset"] != "toy":
    raise app.UsageError(f"{workdir}: evaluate_run scores toy runs; config.data.dataset is {config['data']['dataset']!r}")
  plan = DemoPlan(distill_steps={}, conditions=tuple(range(toy_condition.NUM_CONDITIONS)),
                  per_condition=_PER_CONDITION.value, stage2_per_condition=_STRUCTURES.value,
                  fidelity_train_shapes=_FIDELITY_SHAPES.value)
  methods = [Method(f"steps{s}_w{w}", "run", int(s), float(w)) for w in _CFG.value for s in _STEPS.value]
  curve.evaluate_run(workdir, config, methods, plan, toy_models={"ss": model_configs.SS_TOY, "slat": model_configs.SLAT_TOY},
                     ema=_EMA.value, seed=_SEED.value, log=lambda line: print(line, flush=True))


if __name__ == "__main__":
  cli.run(main)
