"""Forward time of the DINOv2 condition encoder (``encode_images``), jitted, random params.

  python launch/benchmark_dinov2.py --batch=1 --size=518 --dtypes=float32,bfloat16

Prints, per compute dtype: compile time, the median of ``--repeats`` forward times (after one
warm-up call), and the compiled program's FLOP count from XLA's cost analysis.
"""
from __future__ import annotations

import functools
import statistics
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from conversion.dinov2 import model_from_config
from mdt_jax.encoders import encode_images

_CONFIG = flags.DEFINE_string("config", "dinov2_vitl14_reg", "preset name or config json")
_BATCH = flags.DEFINE_integer("batch", 1, "images per call")
_SIZE = flags.DEFINE_integer("size", 518, "image height and width (a multiple of 14)")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "compute dtypes to time")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed calls per dtype")


def main(argv):
  del argv
  model = model_from_config(_CONFIG.value)
  images = jax.random.uniform(jax.random.key(1), (_BATCH.value, _SIZE.value, _SIZE.value, 3), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), images)["params"]
  num_params = sum(x.size for x in jax.tree.leaves(params))
  print(f"{_CONFIG.value}: {num_params:,} params; images {images.shape}; {jax.devices()[0].device_kind}, "
        f"{jax.device_count()} device(s)")
  for name in _DTYPES.value:
    encode = jax.jit(functools.partial(encode_images, model, dtype=jnp.dtype(name)))
    start = time.perf_counter()
    compiled = encode.lower(params, images).compile()
    compile_s = time.perf_counter() - start
    flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
    compiled(params, images).block_until_ready()
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      compiled(params, images).block_until_ready()
      times.append(time.perf_counter() - start)
    median = statistics.median(times)
    print(f"  {name:9s} forward median {median * 1e3:9.1f} ms (min {min(times) * 1e3:.1f}, "
          f"{len(times)} runs); compile {compile_s:.1f} s; {flops / 1e12:.3f} TFLOP -> "
          f"{flops / median / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
  app.run(main)
