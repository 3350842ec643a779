"""Builds the toy 3D dataset and reports its build time and the test split's family-recovery rate
(mdt_jax/data/toy_report.py, with the figures measured on the 2-core CPU machine).

  python launch/build_toy_dataset.py --data_dir=/tmp/tfds            # the default (R = 16, 20,000)
  python launch/build_toy_dataset.py --data_dir=/tmp/tfds --config=r32

An already prepared dataset is reused (TFDS), so the time printed is then the load time.
"""
from absl import flags

from mdt_jax import cli
from mdt_jax.data.toy_report import build_and_report

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.", required=True)
_CONFIG = flags.DEFINE_enum("config", "r16", ["r16", "r32"], "Builder config.")
_RECOVERY = flags.DEFINE_bool("recovery", True, "Measure the test split's family-recovery rate.")


def main(argv):
  del argv
  build_and_report(_DATA_DIR.value, _CONFIG.value, _RECOVERY.value, log=print)


if __name__ == "__main__":
  cli.run(main)
