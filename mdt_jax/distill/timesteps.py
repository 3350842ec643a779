"""Training-time draws of the flow time t (fixtures README section 6, "Time")."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mdt_jax.distill.spec import ObjectiveSpec


def draw_t_z(key: jax.Array, batch_size: int, schedule_name: str) -> jax.Array:
  """The raw time draw ``t_z`` [B]: N(0, 1) for ``logitNormal``, U(0, 1) for ``uniform``."""
  if schedule_name == "logitNormal":
    return jax.random.normal(key, (batch_size,), jnp.float32)
  if schedule_name == "uniform":
    return jax.random.uniform(key, (batch_size,), jnp.float32)
  raise ValueError(f"t_schedule.name must be 'logitNormal' or 'uniform', got {schedule_name!r}")


def training_time(t_z: jax.Array, spec) -> jax.Array:
  """[B] raw draws -> [B] float32 flow times t.

  s = sigmoid(std t_z + mean) (logit-normal) or t_z itself (uniform), optionally warped by
  ``rescale_t`` (s' = r s / (1 + (r - 1) s)); then for the discrete and CM targets
  t = sigma_min + D + (1 - D - sigma_min) s so that t - D stays >= sigma_min, and for the
  continuous target t = sigma_min + (1 - sigma_min) s. ``spec``: an ObjectiveSpec (or a config).
  """
  spec = ObjectiveSpec.of(spec)
  schedule = spec.t_schedule
  s = jax.nn.sigmoid(t_z * schedule.std + schedule.mean) if schedule.name == "logitNormal" else t_z
  r = spec.rescale_t
  if r != 1.0:
    s = r * s / (1 + (r - 1) * s)
  if spec.uses_interval:
    d, sigma_min = spec.distill_interval, spec.sigma_min
    return sigma_min + d + (1 - (d + sigma_min)) * s
  return spec.sigma_min + (1 - spec.sigma_min) * s


def t_bins(t: jax.Array, num_bins: int = 10) -> jax.Array:
  """[B] flow times -> [B] int32 bin index in 0..num_bins-1 (equal bins of [0, 1])."""
  return jnp.clip(jnp.floor(t * num_bins).astype(jnp.int32), 0, num_bins - 1)
