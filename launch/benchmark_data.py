"""Input-pipeline throughput on the toy dataset: dense and sparse batches, and sparse padding
(mdt_jax/bench/data_throughput.py, with the figures measured on the 2-core CPU machine).

  python launch/benchmark_data.py --data_dir=/tmp/tfds --instances_per_device=8 --devices=4

Builds the default toy dataset if needed, then times `--batches` batches (after one warm-up batch)
of the grain iterator for each `--threads` value, and the plain source reads alone for reference.
"""
from absl import flags

from mdt_jax import cli
from mdt_jax.bench.data_throughput import data_throughput

_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory.", required=True)
_PER_DEVICE = flags.DEFINE_integer("instances_per_device", 8, "Instances per device.")
_DEVICES = flags.DEFINE_integer("devices", 4, "Devices per host.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per measurement.")
_THREADS = flags.DEFINE_list("threads", ["0", "1", "2"], "grain read threads to compare.")


def main(argv):
  del argv
  data_throughput(_DATA_DIR.value, _PER_DEVICE.value, _DEVICES.value, _BATCHES.value,
                  tuple(map(int, _THREADS.value)), log=print)


if __name__ == "__main__":
  cli.run(main)
