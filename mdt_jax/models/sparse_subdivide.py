"""TRELLIS's ``SparseSubdivideBlock3d`` (the SLat mesh decoder's 2x up-sampling) and its per-sample GroupNorm
(decoder fixtures README, section 4)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models import initializers
from mdt_jax.sparse.conv import SparseConv3d
from mdt_jax.sparse.neighbours import neighbour_table
from mdt_jax.sparse.resample import subdivide
from mdt_jax.sparse.tensor import SparseTensor

Dtype = Any


def sparse_group_norm(x: SparseTensor, groups: int, eps: float = 1e-5) -> jax.Array:
  """Non-affine GroupNorm of ``x.feats`` [cap, C] -> [cap, C] float32: ``groups`` groups of contiguous
  channels, statistics per sample over all its voxels x the group's channels (biased variance, two
  passes), in float32. Padding rows come out 0."""
  cap, c = x.feats.shape
  if c % groups:
    raise ValueError(f"sparse_group_norm: {c} channels are not divisible into {groups} groups")
  b = x.batch_size
  seg = jnp.where(x.mask, x.coords[:, 0], b)                                  # padding -> dropped segment
  f = x.feats.astype(jnp.float32).reshape(cap, groups, c // groups)
  count = jax.ops.segment_sum(jnp.ones((cap,), jnp.float32), seg, num_segments=b) * (c // groups)
  mean = jax.ops.segment_sum(f.sum(-1), seg, num_segments=b) / jnp.maximum(count, 1)[:, None]   # [B, groups]
  centred = f - mean.at[seg].get(mode="fill", fill_value=0)[:, :, None]
  var = jax.ops.segment_sum(jnp.square(centred).sum(-1), seg, num_segments=b) / jnp.maximum(count, 1)[:, None]
  out = centred * jax.lax.rsqrt(var + eps).at[seg].get(mode="fill", fill_value=0)[:, :, None]
  return jnp.where(x.mask[:, None], out.reshape(cap, c), 0)


class SparseGroupNorm32(nn.Module):
  """:func:`sparse_group_norm` with an affine ``scale``/``bias`` [C] (float32), cast to ``dtype``."""
  groups: int = 32
  eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: SparseTensor) -> SparseTensor:
    c = x.feats.shape[-1]
    y = sparse_group_norm(x, self.groups, self.eps)
    y = y * self.param("scale", nn.initializers.ones, (c,)) + self.param("bias", nn.initializers.zeros, (c,))
    return x.replace_feats(y.astype(self.dtype))


class SparseLinear(nn.Module):
  """A kernel-volume-1 sparse conv (params under ``conv``): ``x @ kernel + bias`` with kernel [C_in, C_out].

  TRELLIS stores it ``[C_out, 1, 1, 1, C_in]``, and its default sparse backend (spconv) multiplies by that
  tensor's memory read as an ``[C_in, C_out]`` matrix (README section 4); the kernel here *is* that matrix
  (``conversion`` reinterprets the memory, it does not transpose)."""
  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, feats):
    return initializers.dense(self.features, "conv", dtype=self.dtype)(feats)


class SparseSubdivideBlock3d(nn.Module):
  """``h = SiLU(GN(x))``; subdivide h and x; ``h = conv_3(SiLU(GN(conv_3(h))))``; ``out = h + skip(x)``.

  Params: ``act_layers_0`` (GN), ``out_layers_0`` (3x3x3 conv), ``out_layers_1`` (GN), ``out_layers_3``
  (3x3x3 conv, zero-initialised as upstream), ``skip_connection`` (:class:`SparseLinear`, only when the
  width changes). Call: ``x`` at ``resolution`` -> a SparseTensor of 8x the capacity at ``2 resolution``,
  rows parent-major (``mdt_jax.sparse.subdivide``), features [8 cap, out_channels] in ``dtype``, 0 on padding.
  """
  resolution: int
  out_channels: int
  num_groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: SparseTensor) -> SparseTensor:
    x = x.replace_feats(x.feats.astype(self.dtype))
    h = SparseGroupNorm32(self.num_groups, dtype=self.dtype, name="act_layers_0")(x)
    h = subdivide(h.replace_feats(nn.silu(h.feats)))
    x = subdivide(x)
    neighbours = neighbour_table(h.coords, h.mask, resolution=2 * self.resolution, batch_size=h.batch_size)
    h = h.replace_feats(SparseConv3d(self.out_channels, self.dtype, name="out_layers_0")(h.feats, neighbours))
    h = SparseGroupNorm32(self.num_groups, dtype=self.dtype, name="out_layers_1")(h)
    h = SparseConv3d(self.out_channels, self.dtype, kernel_init=initializers.ZERO, name="out_layers_3")(
        nn.silu(h.feats), neighbours)
    skip = x.feats if x.feats.shape[-1] == self.out_channels else SparseLinear(
        self.out_channels, self.dtype, name="skip_connection")(x.feats)
    return x.replace_feats(jnp.where(x.mask[:, None], h + skip, 0))
