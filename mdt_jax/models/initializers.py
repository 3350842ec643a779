"""Fresh initialisation of the flow transformers: TRELLIS's scheme, which is DiT's.

Linear layers get xavier-uniform kernels and zero biases; the time-embedding MLP N(0, 0.02^2)
kernels. Every adaLN modulation, the output layer and each sparse res-block's second conv start at
zero (kernel and bias; fixtures README: "TRELLIS initialises to zero (adaLN, out_layer, conv2)"),
so each residual branch starts as the identity and the initial velocity is 0. Sparse 3x3x3 conv
kernels otherwise keep a fan-in-scaled init (``mdt_jax.sparse.conv.KERNEL_INIT``), as TRELLIS leaves
them at the framework default.
TRELLIS.2's ``initialization="scaled"`` draws the blocks' kernels from N(0, 2 / (5 C)), their
residual outputs (``to_out``, ``mlp_2``) from N(0, 1 / (5 N C)) (N blocks) and ``input_layer``'s from
N(0, 1 / C_in): :func:`kernel_stds`; the rest as above ("vanilla" is the scheme above).
Loaded checkpoints overwrite all of this; it matters for teachers trained from scratch.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

LINEAR = nn.initializers.xavier_uniform()
TIMESTEP_MLP = nn.initializers.normal(0.02)
ZERO = nn.initializers.zeros


def dense(features: int, name: str, *, dtype: Any = jnp.float32, kernel_init=LINEAR) -> nn.Dense:
  """A linear layer of the flow transformers (zero bias; ``kernel_init`` LINEAR unless stated)."""
  return nn.Dense(features, dtype=dtype, kernel_init=kernel_init, name=name)


def kernel_stds(channels: int, num_blocks: int) -> tuple[float, float]:
  """TRELLIS.2's "scaled" block init: (std of the blocks' kernels, std of their residual outputs)."""
  return math.sqrt(2.0 / (5.0 * channels)), 1.0 / math.sqrt(5.0 * num_blocks * channels)


def block_kernels(stds: Optional[tuple[float, float]]) -> tuple[Any, Any]:
  """-> (initialiser of a block's kernels, of its residual outputs): LINEAR for None, else normals."""
  return (LINEAR, LINEAR) if stds is None else (nn.initializers.normal(stds[0]), nn.initializers.normal(stds[1]))
