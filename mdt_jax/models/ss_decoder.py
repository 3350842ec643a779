"""TRELLIS's SparseStructureDecoder: the dense conv3d VAE decoder of stage 1 (fixtures README section 4).

It maps the sparse-structure latent to occupancy logits (> 0: occupied), channels-last:
``z [B, R, R, R, latent_channels]`` -> ``[B, R', R', R', out_channels]``, R' = R 2^(len(channels) - 1);
grid axes (D, H, W) are those of TRELLIS's NCDHW tensors.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models.norms import LayerNorm32

Dtype = Any


def pixel_shuffle_3d(x: jax.Array) -> jax.Array:
  """[B, D, H, W, 8C] -> [B, 2D, 2H, 2W, C]: channel ``c*8 + a*4 + b*2 + e`` at (d, h, w) goes to
  channel c at (2d + a, 2h + b, 2w + e)."""
  b, d, h, w, c8 = x.shape
  c = c8 // 8
  x = x.reshape(b, d, h, w, c, 2, 2, 2).transpose(0, 1, 5, 2, 6, 3, 7, 4)
  return x.reshape(b, 2 * d, 2 * h, 2 * w, c)


def conv3d(features: int, name: str, dtype: Dtype = jnp.float32, kernel: int = 3) -> nn.Conv:
  """Conv3d, stride 1, zero padding ``kernel // 2`` (cross-correlation as torch), kernel
  [k, k, k, in, out]; params float32, computed in ``dtype``."""
  return nn.Conv(features, (kernel,) * 3, padding=kernel // 2, dtype=dtype, name=name)


class ResBlock3d(nn.Module):
  """``x + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))`` with channel LayerNorms (eps 1e-5, affine,
  computed in float32). Channels in = out: the decoder has no other kind (TRELLIS's 1x1-conv skip
  for a change of width never occurs in it)."""
  channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    h = conv3d(self.channels, "conv1", self.dtype)(nn.silu(LayerNorm32(1e-5, affine=True, name="norm1")(x)))
    h = conv3d(self.channels, "conv2", self.dtype)(nn.silu(LayerNorm32(1e-5, affine=True, name="norm2")(h)))
    return x + h


class UpsampleBlock3d(nn.Module):
  """``conv`` (ch -> 8 out_channels, k3) then :func:`pixel_shuffle_3d`: doubles the resolution."""
  out_channels: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return pixel_shuffle_3d(conv3d(8 * self.out_channels, "conv", self.dtype)(x))


class SparseStructureDecoder(nn.Module):
  """Stage-1 VAE decoder: latent grid -> occupancy logits.

  Fields are TRELLIS's constructor arguments, plus ``dtype``, the compute dtype of the trunk
  (``middle_block`` and ``blocks``; float32 by default, float16 reproduces ``use_fp16``); the input
  and output convs and all norms compute in float32, params are float32. Only ``norm_type`` 'layer'
  (the released decoder's) is supported.

  Params mirror TRELLIS's state dict: ``input_layer``, ``middle_block_i`` (ResBlock3d),
  ``blocks_k`` (per channel stage ``num_res_blocks`` ResBlock3d, then an UpsampleBlock3d except after
  the last stage), ``out_layer_0`` (LayerNorm), ``out_layer_2`` (conv).

  Call: ``model.apply({"params": p}, z)``, z [B, R, R, R, latent_channels] channels-last ->
  logits [B, R', R', R', out_channels] float32, R' = R 2^(len(channels) - 1).
  """
  out_channels: int
  latent_channels: int
  num_res_blocks: int
  channels: Sequence[int]
  num_res_blocks_middle: int = 2
  norm_type: str = "layer"
  use_fp16: bool = False
  dtype: Dtype = jnp.float32

  def example_inputs(self, batch_size: int = 1, resolution: int = 2):
    """Zero latents of the right shape (for ``init`` and ``jax.eval_shape``; any resolution works)."""
    return (jnp.zeros((batch_size,) + (resolution,) * 3 + (self.latent_channels,)),)

  @nn.compact
  def __call__(self, z):
    if self.norm_type != "layer":
      raise NotImplementedError(f"SparseStructureDecoder: norm_type={self.norm_type!r} (only 'layer')")
    if z.ndim != 5 or z.shape[-1] != self.latent_channels:
      raise ValueError(f"SparseStructureDecoder: z must be [B, R, R, R, {self.latent_channels}] channels-last, "
                       f"got {z.shape}")
    channels = list(self.channels)
    h = conv3d(channels[0], "input_layer")(z.astype(jnp.float32)).astype(self.dtype)
    for i in range(self.num_res_blocks_middle):
      h = ResBlock3d(channels[0], self.dtype, name=f"middle_block_{i}")(h)
    k = 0
    for i, ch in enumerate(channels):
      for _ in range(self.num_res_blocks):
        h = ResBlock3d(ch, self.dtype, name=f"blocks_{k}")(h)
        k += 1
      if i + 1 < len(channels):
        h = UpsampleBlock3d(channels[i + 1], self.dtype, name=f"blocks_{k}")(h)
        k += 1
    h = nn.silu(LayerNorm32(1e-5, affine=True, name="out_layer_0")(h.astype(jnp.float32)))
    return conv3d(self.out_channels, "out_layer_2")(h)
