"""Normalisations that compute in float32 and return the input's dtype (as TRELLIS's fp16 mode)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def layer_norm(x: jax.Array, eps: float) -> jax.Array:
  """Non-affine LayerNorm over the last axis, in float32 (two-pass variance)."""
  x = x.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps)


class LayerNorm32(nn.Module):
  """LayerNorm over the last axis in float32, cast back to the input dtype.

  Params (``affine=True``): ``scale`` [C] and ``bias`` [C] (torch ``weight``/``bias``).
  """
  eps: float = 1e-6
  affine: bool = False

  @nn.compact
  def __call__(self, x):
    y = layer_norm(x, self.eps)
    if self.affine:
      c = x.shape[-1]
      y = y * self.param("scale", nn.initializers.ones, (c,)) + self.param("bias", nn.initializers.zeros, (c,))
    return y.astype(x.dtype)


class MultiHeadRMSNorm(nn.Module):
  """``x / max(||x||, 1e-12) * gamma * sqrt(d)`` over the head dim, in float32.

  x: [..., H, d]; param ``gamma`` [H, d].
  """
  num_heads: int
  head_dim: int

  @nn.compact
  def __call__(self, x):
    gamma = self.param("gamma", nn.initializers.ones, (self.num_heads, self.head_dim))
    x32 = x.astype(jnp.float32)
    # 1 / max(||x||, 1e-12) as rsqrt(max(||x||^2, 1e-24)): the same value, and a zero vector (a
    # padding row of a freshly initialised sparse model) gets a zero gradient instead of 0 * inf.
    inv_norm = jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x32), axis=-1, keepdims=True), 1e-24))
    y = x32 * inv_norm * gamma * (self.head_dim ** 0.5)
    return y.astype(x.dtype)
