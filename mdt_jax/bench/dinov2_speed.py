"""Forward time of the DINOv2 condition encoder (``encode_images``), jitted, random params
(launch/benchmark_dinov2.py).

Reports, per compute dtype: compile time, the median of ``repeats`` forward times (after one
warm-up call), the compiled program's FLOP count (XLA cost analysis) and its rate as a fraction
of this machine's GEMM rate in that dtype, measured in the same run on the MLP's first matmul
([tokens, C] x [C, 4C]).
"""
import functools
import statistics
import time

import jax
import jax.numpy as jnp

from conversion.dinov2 import model_from_config
from mdt_jax.encoders import encode_images


def median_seconds(fn, *args, repeats: int) -> float:
  """Median wall time of ``repeats`` calls of an already compiled ``fn``, after one warm-up."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def gemm_rate(tokens: int, dim: int, hidden: int, dtype, repeats: int) -> float:
  """FLOP/s of one jitted [tokens, dim] x [dim, hidden] matmul in ``dtype``."""
  a = jax.random.normal(jax.random.key(2), (tokens, dim), dtype)
  b = jax.random.normal(jax.random.key(3), (dim, hidden), dtype)
  return 2 * tokens * dim * hidden / median_seconds(jax.jit(jnp.dot), a, b, repeats=repeats)


def dinov2_speed(config: str = "dinov2_vitl14_reg", batch: int = 1, size: int = 518,
                 dtypes: tuple[str, ...] = ("float32", "bfloat16"), repeats: int = 5, log=print) -> None:
  """Times the encoder of ``config`` (a preset name or config json) on ``batch`` random images of
  ``size`` x ``size`` in each of ``dtypes``; a line per dtype to ``log``."""
  model = model_from_config(config)
  images = jax.random.uniform(jax.random.key(1), (batch, size, size, 3), jnp.float32)
  params = jax.jit(model.init)(jax.random.key(0), images)["params"]
  num_params = sum(x.size for x in jax.tree.leaves(params))
  tokens = batch * (1 + model.num_register_tokens + (size // model.patch_size) ** 2)
  log(f"jax {jax.__version__}; {config}: {num_params:,} params; images {images.shape}; "
      f"{jax.devices()[0].device_kind}, {jax.device_count()} device(s)")
  for name in dtypes:
    dtype = jnp.dtype(name)
    encode = jax.jit(functools.partial(encode_images, model, dtype=dtype))
    start = time.perf_counter()
    compiled = encode.lower(params, images).compile()
    compile_s = time.perf_counter() - start
    flops = (compiled.cost_analysis() or {}).get("flops", float("nan"))
    seconds = median_seconds(compiled, params, images, repeats=repeats)
    gemm = gemm_rate(tokens, model.embed_dim, int(model.embed_dim * model.mlp_ratio), dtype, repeats)
    log(f"  {name:9s} forward {seconds * 1e3:9.1f} ms (median of {repeats}); compile {compile_s:.1f} s; "
        f"{flops / 1e12:.3f} TFLOP at {flops / seconds / 1e9:.1f} GFLOP/s = "
        f"{flops / seconds / gemm:.0%} of this machine's {name} GEMM rate ({gemm / 1e9:.1f} GFLOP/s)")
