"""The rectified-flow probability path of TRELLIS / MDT-dist and conversions between its quantities.

Flow time t is in [0, 1]: t = 0 is data ``x0``, t = 1 is noise ``eps``. With ``sigma_min`` (1e-5 in
TRELLIS) the path and its velocity are

    x_t = (1 - t) x0 + (sigma_min + (1 - sigma_min) t) eps
    v   = d x_t / dt = (1 - sigma_min) eps - x0

and, given x_t and v at time t, the two endpoints are recovered exactly:

    eps = x_t + (1 - t) v
    x0  = (1 - sigma_min) x_t - (sigma_min + (1 - sigma_min) t) v

Every function takes dense latents ``[B, ...]`` or :class:`~mdt_jax.sparse.SparseTensor`s (the
result has the first argument's structure) and ``t`` as a scalar or one value per sample ``[B]``.
"""
from __future__ import annotations

import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.latents import Latent


def _per_sample(x: Latent, t) -> jnp.ndarray:
  """Scalar or [B] time -> an array broadcasting against ``latents.feats(x)``."""
  t = jnp.asarray(t, jnp.float32)
  return t if t.ndim == 0 else latents.per_sample(x, t)


def noise_scale(t, sigma_min: float):
  """sigma(t) = sigma_min + (1 - sigma_min) t, the coefficient of eps in x_t."""
  return sigma_min + (1.0 - sigma_min) * t


def diffuse(x0: Latent, eps: Latent, t, sigma_min: float) -> Latent:
  """x_t = (1 - t) x0 + sigma(t) eps."""
  tb = _per_sample(x0, t)
  return latents.map_feats(lambda a, e: (1.0 - tb) * a + noise_scale(tb, sigma_min) * e, x0, eps)


def velocity_target(x0: Latent, eps: Latent, sigma_min: float) -> Latent:
  """The flow-matching target v = (1 - sigma_min) eps - x0 (independent of t)."""
  return latents.map_feats(lambda a, e: (1.0 - sigma_min) * e - a, x0, eps)


def x0_from_v(x_t: Latent, v: Latent, t, sigma_min: float) -> Latent:
  """x0 = (1 - sigma_min) x_t - sigma(t) v."""
  tb = _per_sample(x_t, t)
  return latents.map_feats(lambda x, u: (1.0 - sigma_min) * x - noise_scale(tb, sigma_min) * u, x_t, v)


def eps_from_v(x_t: Latent, v: Latent, t) -> Latent:
  """eps = x_t + (1 - t) v (exact for any sigma_min)."""
  tb = _per_sample(x_t, t)
  return latents.map_feats(lambda x, u: x + (1.0 - tb) * u, x_t, v)


def v_from_x0(x_t: Latent, x0: Latent, t, sigma_min: float) -> Latent:
  """v from x_t and a prediction of x0: eps = (x_t - (1 - t) x0) / sigma(t), then v. Needs sigma(t) > 0."""
  tb = _per_sample(x_t, t)
  return latents.map_feats(
      lambda x, a: (1.0 - sigma_min) * (x - (1.0 - tb) * a) / noise_scale(tb, sigma_min) - a, x_t, x0)


def v_from_eps(x_t: Latent, eps: Latent, t, sigma_min: float) -> Latent:
  """v from x_t and a prediction of eps: x0 = (x_t - sigma(t) eps) / (1 - t), then v. Needs t < 1."""
  tb = _per_sample(x_t, t)
  return latents.map_feats(
      lambda x, e: (1.0 - sigma_min) * e - (x - noise_scale(tb, sigma_min) * e) / (1.0 - tb), x_t, eps)
