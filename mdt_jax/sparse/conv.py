"""Submanifold sparse 3x3x3 convolution (TRELLIS's spconv ``SubMConv3d``; fixtures README section 1).

``out[p] = bias + sum_k W_k^T in[p + OFFSETS[k]]`` over the active sites p only; absent neighbours
count as zero. The 27 kernel taps run as a ``lax.scan`` of ``(in @ W_k)`` gathered by the
neighbour table: memory per step is one ``[cap, C_out]`` array, and the backward pass keeps only
the input and the table (no ``[cap, 27, C_in]`` gather). On 2 CPU cores (20k-40k sites, C_in 16-64)
this was 2.5-10x faster than one gathered ``[cap, 27 C_in]`` GEMM, forward and backward, and 1-5x
faster than gathering before each tap's matmul.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models import initializers

Dtype = Any


def sparse_conv3d(feats: jax.Array, neighbours: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """feats [cap, C_in], neighbours [cap, 27] int32 (``cap`` where absent), kernel [3, 3, 3, C_in, C_out]
  (``kernel[a, b, c]`` acts on offset (a-1, b-1, c-1)), bias [C_out] -> [cap, C_out] in feats' dtype.

  Rows whose neighbours are all absent (padding) get ``bias``.
  """
  cap, c_in = feats.shape
  if kernel.shape[:4] != (3, 3, 3, c_in) or neighbours.shape != (cap, 27):
    raise ValueError(f"sparse_conv3d: feats {feats.shape}, neighbours {neighbours.shape}, "
                     f"kernel {kernel.shape} (expected [3, 3, 3, {c_in}, C_out])")
  taps = kernel.reshape(27, c_in, kernel.shape[-1]).astype(feats.dtype)

  def tap(acc, xs):
    weight, rows = xs
    return acc + (feats @ weight).at[rows].get(mode="fill", fill_value=0), None

  out, _ = jax.lax.scan(tap, jnp.zeros((cap, kernel.shape[-1]), feats.dtype), (taps, neighbours.T))
  return out + bias.astype(feats.dtype)


class SubMConv3d(nn.Module):
  """The parameter holder: ``kernel`` [3, 3, 3, C_in, C_out] and ``bias`` [C_out], float32.

  TRELLIS stores the kernel as ``[C_out, 3, 3, 3, C_in]`` (conversion.common.SPARSE_CONV3D).
  """
  features: int
  dtype: Dtype = jnp.float32
  kernel_init: Callable = initializers.SPARSE_CONV

  @nn.compact
  def __call__(self, feats, neighbours):
    kernel = self.param("kernel", self.kernel_init, (3, 3, 3, feats.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    return sparse_conv3d(feats.astype(self.dtype), neighbours, kernel, bias)


class SparseConv3d(nn.Module):
  """TRELLIS's ``SparseConv3d`` wrapper: params under ``conv`` (``<module>.conv.weight/.bias``)."""
  features: int
  dtype: Dtype = jnp.float32
  kernel_init: Callable = initializers.SPARSE_CONV

  @nn.compact
  def __call__(self, feats, neighbours):
    return SubMConv3d(self.features, self.dtype, self.kernel_init, name="conv")(feats, neighbours)
