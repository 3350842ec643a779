"""3-D rotary position embedding of the TRELLIS.2 flows (fixtures README section 2.3).

A voxel (x, y, z) has d/2 angles: ``fd = d // 2 // 3`` frequencies ``f_j = base / theta^(j / fd)``
per axis (``rope_freq = (base, theta)``, TRELLIS.2's default (1.0, 10000.0)), the angle vector being
``[x f, y f, z f]`` zero-padded to d/2 (angle 0: no rotation). The rotation acts on interleaved
pairs: channels (2i, 2i+1) of each head are the complex number ``q[2i] + i q[2i+1]``, multiplied by
``exp(i theta_i)``; the same angles serve every head, q and k. Computed in float32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def rope_angles(coords, head_dim: int, rope_freq: tuple[float, float] = (1.0, 10000.0)) -> jax.Array:
  """[N, 3] voxel coordinates -> [N, head_dim // 2] float32 rotation angles."""
  fd = head_dim // 2 // 3
  base, theta = rope_freq
  freqs = base / (theta ** (jnp.arange(fd, dtype=jnp.float32) / fd))
  coords = jnp.asarray(coords).astype(jnp.float32)
  angles = (coords[:, :, None] * freqs[None, None, :]).reshape(coords.shape[0], 3 * fd)
  return jnp.pad(angles, ((0, 0), (0, head_dim // 2 - 3 * fd)))


def rotation(coords, head_dim: int, rope_freq: tuple[float, float] = (1.0, 10000.0)) -> tuple[jax.Array, jax.Array]:
  """-> (cos, sin) of :func:`rope_angles`, each [N, head_dim // 2] float32."""
  angles = rope_angles(coords, head_dim, rope_freq)
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates interleaved pairs: x [B, N, H, d], cos/sin [N, d/2] -> [B, N, H, d] in x's dtype."""
  b, n, h, d = x.shape
  pairs = x.astype(jnp.float32).reshape(b, n, h, d // 2, 2)
  re, im = pairs[..., 0], pairs[..., 1]
  cos, sin = cos[None, :, None, :], sin[None, :, None, :]
  out = jnp.stack([re * cos - im * sin, re * sin + im * cos], axis=-1)
  return out.reshape(b, n, h, d).astype(x.dtype)
