"""Sinusoidal embeddings of time and of grid position (fixtures README sections 2.3-2.4)."""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdt_jax.models import initializers


def timestep_embedding(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """[B] model time (0..1000) -> [B, dim] float32 ``[cos(t f), sin(t f)]``, cosine first."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


def absolute_position_embedding(coords, channels: int, xp=jnp):
  """[N, 3] grid coordinates -> [N, channels] float32 APE, sine first.

  Per axis i, ``[sin(x_i f), cos(x_i f)]`` with ``f = 10000^(-arange(F)/F)``, ``F = channels//3//2``;
  the three axes are concatenated and zero-padded at the end up to ``channels``. ``xp`` is
  ``jnp`` (traced coords, the sparse model) or ``np`` (a host-side table).
  """
  freq_dim = channels // 3 // 2
  freqs = 1.0 / (10000.0 ** (xp.arange(freq_dim, dtype=xp.float32) / xp.float32(freq_dim)))
  coords = xp.asarray(coords).astype(xp.float32)
  parts = []
  for axis in range(3):
    angle = coords[:, axis, None] * freqs[None, :]
    parts += [xp.sin(angle), xp.cos(angle)]
  emb = xp.concatenate(parts, axis=-1)
  pad = channels - emb.shape[-1]
  return xp.concatenate([emb, xp.zeros((emb.shape[0], pad), xp.float32)], axis=-1) if pad else emb


def grid_coords(size: int) -> np.ndarray:
  """[size^3, 3] int32 coordinates of a cubic grid, row-major over (d, h, w)."""
  axes = np.meshgrid(*[np.arange(size)] * 3, indexing="ij")
  return np.stack([a.reshape(-1) for a in axes], axis=-1).astype(np.int32)


class TimestepEmbedder(nn.Module):
  """[B] model time -> [B, hidden] via sinusoid, ``mlp_0``, SiLU, ``mlp_2`` (float32)."""
  hidden_size: int
  frequency_embedding_size: int = 256

  @nn.compact
  def __call__(self, t):
    h = timestep_embedding(t, self.frequency_embedding_size)
    h = initializers.dense(self.hidden_size, "mlp_0", kernel_init=initializers.TIMESTEP_MLP)(h)
    return initializers.dense(self.hidden_size, "mlp_2", kernel_init=initializers.TIMESTEP_MLP)(nn.silu(h))
