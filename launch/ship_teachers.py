"""Ships the toy teachers: rounds two finished teacher runs' EMA weights to float16 TRELLIS checkpoints
and measures them, after the rounding, on the demo's evaluation sets (mdt_jax/demo/ship.py says what
it writes).

    python launch/ship_teachers.py --ss_run=/tmp/ss_teacher --slat_run=/tmp/slat_teacher --out=teachers
"""
from pathlib import Path

from absl import flags

from mdt_jax import cli
from mdt_jax.demo.ship import ship_teachers

_SS_RUN = flags.DEFINE_string("ss_run", None, "Finished launch/train.py run of configs/teacher.py:ss_toy.", required=True)
_SLAT_RUN = flags.DEFINE_string("slat_run", None, "Finished run of configs/teacher.py:slat_toy.", required=True)
_OUT = flags.DEFINE_string("out", "teachers", "Output directory (the repo's teachers/).")
_SCRATCH = flags.DEFINE_string("scratch", None, "Evaluation cache (default: <ss_run>/ship_eval).")
_WEIGHTS = flags.DEFINE_enum("weights", "ema", ["ema", "raw"], "Ship each run's first EMA or its raw params "
                             "(choose from launch/evaluate_run.py's curves, and say which in teachers/README.md).")


def main(argv):
  del argv
  table = ship_teachers({"ss": _SS_RUN.value, "slat": _SLAT_RUN.value}, Path(_OUT.value), weights=_WEIGHTS.value,
                        scratch=_SCRATCH.value and Path(_SCRATCH.value), log=lambda line: print(line, flush=True))
  print(table)


if __name__ == "__main__":
  cli.run(main)
