"""The toy benchmark's reference rows and the cost of one evaluation (mdt_jax/eval/reference_report.py
says what is scored, with the figures measured on the 2-core CPU machine).

  python launch/toy_eval_reference.py                      # r16: 24 conditions x 16 vs 16
  python launch/toy_eval_reference.py --spread_seeds=4 --per_condition=8
"""
from absl import flags

from mdt_jax import cli
from mdt_jax.eval.reference_report import reference_report

_CONFIG = flags.DEFINE_enum("config", "r16", ["r16", "r32"], "Toy dataset config.")
_PER_CONDITION = flags.DEFINE_integer("per_condition", 16, "Shapes a condition in each compared set.")
_SPREAD_SEEDS = flags.DEFINE_integer("spread_seeds", 8, "Dataset seeds 1..N whose test splits give the "
                                     "fresh real sets of the spread row.")


def main(argv):
  del argv
  reference_report(_CONFIG.value, _PER_CONDITION.value, _SPREAD_SEEDS.value, log=print)


if __name__ == "__main__":
  cli.run(main)
