"""Forward time of the DINOv2 condition encoder (``encode_images``), jitted, random params
(mdt_jax/bench/dinov2_speed.py).

    python launch/benchmark_dinov2.py --batch=1 --size=518 --dtypes=float32,bfloat16

Prints, per compute dtype: compile time, the median of ``--repeats`` forward times (after one
warm-up call), the compiled program's FLOP count (XLA cost analysis) and its rate as a fraction
of this machine's GEMM rate in that dtype, measured in the same run on the MLP's first matmul
([tokens, C] x [C, 4C]).
"""
from absl import flags

from mdt_jax import cli
from mdt_jax.bench.dinov2_speed import dinov2_speed

_CONFIG = flags.DEFINE_string("config", "dinov2_vitl14_reg", "preset name or config json")
_BATCH = flags.DEFINE_integer("batch", 1, "images per call")
_SIZE = flags.DEFINE_integer("size", 518, "image height and width (a multiple of 14)")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes to time")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per measurement (median reported)")


def main(argv):
  del argv
  dinov2_speed(_CONFIG.value, _BATCH.value, _SIZE.value, tuple(_DTYPES.value), _REPEATS.value, log=print)


if __name__ == "__main__":
  cli.run(main)
