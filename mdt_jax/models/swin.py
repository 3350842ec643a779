"""TRELLIS's ``SparseTransformerBase``: the sparse transformer trunk of the SLat VAE (decoders and encoder),
with shifted-window ("swin") self attention (decoder fixtures README, section 1).

Windows: block i uses window size ``ws`` and shift ``s = (ws // 2) (i % 2)``; a voxel's window is the key
``(b, (x + s) // ws, (y + s) // ws, (z + s) // ws)``. The shift is added to the coordinates: no cyclic roll,
no masking, windows at the border are partial and windows never mix samples. Attention is full softmax
attention among the voxels of one window, computed by the one attention function with the window key as
segment id, on the rows sorted by window so that each window is contiguous (the blocked and varlen
implementations then skip every pair of rows of different windows).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models.attention import Packing
from mdt_jax.models.norms import LayerNorm32
from mdt_jax.models.transformer import FeedForward, MultiHeadAttention

Dtype = Any


def windows_per_axis(resolution: int, window_size: int) -> int:
  """Window indices per axis for any shift up to ``window_size // 2``: ``(x + s) // ws`` < this."""
  return (resolution - 1 + window_size // 2) // window_size + 1


def window_ids(coords: jax.Array, mask: jax.Array, *, window_size: int, shift: int, resolution: int) -> jax.Array:
  """coords [cap, 4] int32 (b, x, y, z), mask [cap] -> [cap] int32 window key
  ``((b n + wx) n + wy) n + wz`` (``n = windows_per_axis``), lexicographic in (b, wx, wy, wz) as upstream's
  window order. Padding rows get the largest int32."""
  n = windows_per_axis(resolution, window_size)
  w = (coords[:, 1:] + shift) // window_size
  key = ((coords[:, 0] * n + w[:, 0]) * n + w[:, 1]) * n + w[:, 2]
  return jnp.where(mask, key, jnp.iinfo(jnp.int32).max)


def window_packing(resolution: int, window_size: int, batch_size: int) -> Packing:
  """The static shape of the windows: at most ``batch_size n^3`` of them, ``ws^3`` voxels each."""
  return Packing(num_segments=batch_size * windows_per_axis(resolution, window_size) ** 3,
                 q_capacity=window_size ** 3, kv_capacity=window_size ** 3)


def window_order(coords: jax.Array, mask: jax.Array, *, window_size: int, shift: int, resolution: int,
                 batch_size: int):
  """-> (order [cap] int32: rows sorted by window (stable, so input order within a window, padding last),
  segment ids [cap] int32 in that order (the window key; padding: ``batch_size n^3``, no window's id))."""
  keys = window_ids(coords, mask, window_size=window_size, shift=shift, resolution=resolution)
  order = jnp.argsort(keys, stable=True).astype(jnp.int32)
  sentinel = window_packing(resolution, window_size, batch_size).num_segments
  return order, jnp.minimum(keys[order], sentinel)


class SwinBlock(nn.Module):
  """TRELLIS's ``SparseTransformerBlock`` (no conditioning, no modulation) as a scan step:
  ``h += to_out(attn(LN(h)))``, ``h += mlp(LN(h))``, LN eps 1e-6 without affine; the attention within
  windows. Call: ``(x [cap, C], (order [cap], segment_ids [cap])) -> (x, x or None)`` (the block's output
  when intermediates are captured, see ``transformer.block_outputs``)."""
  channels: int
  num_heads: int
  mlp_ratio: float = 4.0
  qk_rms_norm: bool = False
  packing: Packing | None = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, window):
    order, segment_ids = window
    h = LayerNorm32(1e-6)(x)[order][None]                                      # [1, cap, C], windows contiguous
    h = MultiHeadAttention(self.channels, self.num_heads, qk_rms_norm=self.qk_rms_norm, dtype=self.dtype,
                           name="attn")(
        h, q_segment_ids=segment_ids[None], kv_segment_ids=segment_ids[None], packing=self.packing)
    x = x + jnp.zeros_like(x).at[order].set(h[0].astype(x.dtype))              # back to the input row order
    x = x + FeedForward(self.channels, self.mlp_ratio, dtype=self.dtype, name="mlp")(LayerNorm32(1e-6)(x))
    return x, (x if self.is_mutable_collection("intermediates") else None)
