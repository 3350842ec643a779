"""Evaluates a stage-1 (sparse-structure) toy checkpoint: samples 16 shapes per test condition at
each step count and guidance scale and scores them against the held-out set (mdt_jax/eval/stage1_sweep.py).

    python launch/evaluate_ss.py --checkpoint=teachers/ss_toy --steps=25,4,2,1 --cfg=0,1

Prints one line per (steps, w): 1-NNA (lower is better down to the real-vs-real floor printed
first), COV, MMD, family fidelity, and the sampling latency per shape (compiled, measured).
"""
from absl import flags

from mdt_jax import cli
from mdt_jax.eval.stage1_sweep import stage1_sweep

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "TRELLIS-format stem of a stage-1 toy model.", required=True)
_STEPS = flags.DEFINE_list("steps", ["25", "4", "2", "1"], "Euler step counts.")
_CFG = flags.DEFINE_list("cfg", ["0"], "Guidance scales w.")
_PER_CONDITION = flags.DEFINE_integer("per_condition", 16, "Shapes per condition (generated and reference).")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_TOY_CONFIG = flags.DEFINE_string("toy_config", "r16", "Toy dataset config (resolution).")


def main(argv):
  del argv
  stage1_sweep(_CHECKPOINT.value, [int(s) for s in _STEPS.value], [float(w) for w in _CFG.value],
               _PER_CONDITION.value, _SEED.value, _TOY_CONFIG.value, log=print)


if __name__ == "__main__":
  cli.run(main)
