"""Euler samplers of the rectified flow, the whole loop compiled (one ``lax.scan``).

    x0, trajectory = sample(velocity_fn, noise, steps=25, rescale_t=3.0, cond=cond,
                            cfg_strength=3.0, cfg_interval=(0.5, 1.0))

Plain Euler, Euler with classifier-free guidance and guidance restricted to an interval of t are
one function: guidance applies at step i when ``cfg_strength != 0`` and ``lo <= t_i <= hi``
(TRELLIS's ``FlowEulerSampler``, ``FlowEulerCfgSampler``, ``FlowEulerGuidanceIntervalSampler``).
The schedule is host-side (``schedules.euler_schedule``), so ``steps``, ``rescale_t``,
``cfg_strength`` and ``cfg_interval`` are static Python numbers; everything else may be traced, and
``sample`` can run inside the caller's ``jax.jit`` with the params as traced arguments
(:func:`jit_sample` builds such a function; it compiles once per step count and settings).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.flow.guidance import VelocityFn, guided_velocity
from mdt_jax.flow.schedules import euler_schedule
from mdt_jax.latents import Latent


def sample(velocity_fn: VelocityFn, noise: Latent, *, steps: int, rescale_t: float = 1.0, cond: Any = None,
           neg_cond: Any = None, cfg_strength: float = 0.0, cfg_interval: tuple[float, float] = (0.0, 1.0),
           return_trajectory: bool = True):
  """Integrates dx/dt = v from t = 1 (``noise``) to t = 0 with ``steps`` Euler steps.

  Args:
    velocity_fn: ``velocity_fn(x, t, cond) -> v`` with x like ``noise`` (dense ``[B, ...]`` or a
      ``SparseTensor``), t [B] float32 flow time in [0, 1] (models embed 1000 t), v like x (for a
      sparse x, a ``SparseTensor`` or its feats array). With guidance it is called on a batch of 2B
      (see ``flow.guidance``).
    noise: x at t = 1; dense ``[B, ...]`` (numpy or jax, float32) or a ``SparseTensor``.
    steps: number of Euler steps (>= 1).
    rescale_t: TRELLIS's time warp of the uniform grid (1: none).
    cond: conditioning passed to ``velocity_fn`` (a pytree of ``[B, ...]`` arrays, or None).
    neg_cond: the unconditional branch's conditioning; zeros like ``cond`` by default.
    cfg_strength: w in ``v = (1 + w) v_cond - w v_uncond``; 0 disables guidance (one forward/step).
    cfg_interval: (lo, hi), guidance only at steps whose start time t satisfies lo <= t <= hi.
    return_trajectory: also return x after each step.
  Returns:
    ``(x0, trajectory)``: x0 like ``noise``; trajectory (None unless asked) is x after each step:
    dense, an array ``[steps, B, ...]``; sparse, a list of ``steps`` SparseTensors sharing the
    noise's coords and mask. Sparse padding rows stay zero.
  """
  schedule = euler_schedule(steps, rescale_t, cfg_interval, cfg_strength)
  x = noise if latents.is_sparse(noise) else jnp.asarray(noise)
  if cond is not None:
    cond = jax.tree.map(jnp.asarray, cond)
  if schedule.guidance.any():
    if cond is None:
      raise ValueError("sample: cfg_strength != 0 needs cond (and optionally neg_cond)")
    neg_cond = jax.tree.map(jnp.zeros_like, cond) if neg_cond is None else jax.tree.map(jnp.asarray, neg_cond)
  batch = latents.batch_size(x)
  valid = latents.valid_mask(x)

  def plain(xi, t):
    return latents.feats(velocity_fn(xi, t, cond))

  if not schedule.guidance.any():
    velocity = lambda xi, t, on: plain(xi, t)
  else:
    guided = guided_velocity(velocity_fn, cond, neg_cond, cfg_strength)
    if schedule.guidance.all():
      velocity = lambda xi, t, on: guided(xi, t)
    else:  # both branches compiled once; only the selected one runs at each step
      velocity = lambda xi, t, on: jax.lax.cond(on, guided, plain, xi, t)

  def step(values, scalars):
    t, dt, on = scalars
    v = velocity(latents.map_feats(lambda _: values, x), jnp.full((batch,), t, jnp.float32), on)
    values = values - dt * (v * valid).astype(values.dtype)
    return values, values if return_trajectory else None

  scalars = (jnp.asarray(schedule.model_t), jnp.asarray(schedule.dt), jnp.asarray(schedule.guidance))
  values, trajectory = jax.lax.scan(step, latents.feats(x), scalars)
  x0 = latents.map_feats(lambda _: values, x)
  if return_trajectory and latents.is_sparse(x):
    trajectory = [x.replace_feats(trajectory[i]) for i in range(steps)]
  return x0, trajectory


def jit_sample(apply_fn: Callable[..., Latent]):
  """``apply_fn(params, x, t, cond) -> v`` -> a jitted ``(params, noise, cond=None, neg_cond=None, *,
  steps, rescale_t=1.0, cfg_strength=0.0, cfg_interval=(0.0, 1.0), return_trajectory=False)``.

  The params are a traced argument (never compile-time constants) and the settings are static
  (``cfg_interval`` a tuple): one compilation per step count and settings.
  """
  def run(params, noise, cond=None, neg_cond=None, *, steps, rescale_t=1.0, cfg_strength=0.0,
          cfg_interval=(0.0, 1.0), return_trajectory=False):
    return sample(functools.partial(apply_fn, params), noise, steps=steps, rescale_t=rescale_t, cond=cond,
                  neg_cond=neg_cond, cfg_strength=cfg_strength, cfg_interval=cfg_interval,
                  return_trajectory=return_trajectory)

  return jax.jit(run, static_argnames=("steps", "rescale_t", "cfg_strength", "cfg_interval", "return_trajectory"))
