"""Euler samplers of the rectified flow, the whole loop compiled (one ``lax.scan``).

    x0, trajectory = sample(velocity_fn, noise, steps=25, rescale_t=3.0, cond=cond,
                            cfg_strength=3.0, cfg_interval=(0.5, 1.0))
    # TRELLIS.2's shape stage: g = 7.5 (TRELLIS's w = 6.5), CFG-rescale 0.5
    x0, _ = sample(velocity_fn, noise, steps=12, rescale_t=3.0, cond=cond, cfg_strength=7.5,
                   cfg_interval=(0.6, 1.0), convention="trellis2", guidance_rescale=0.5)

Plain Euler, Euler with classifier-free guidance and guidance restricted to an interval of t are
one function: guidance applies at step i when the weight guides at all and ``lo <= t_i <= hi``
(TRELLIS's and TRELLIS.2's ``FlowEulerSampler``, ``FlowEulerCfgSampler``,
``FlowEulerGuidanceIntervalSampler``); the weight's convention is a parameter
(:mod:`mdt_jax.flow.guidance`: TRELLIS.2's g is TRELLIS's 1 + w). The schedule is host-side
(``schedules.euler_schedule``), so ``steps``, ``rescale_t``, ``cfg_strength``, ``cfg_interval``,
``convention``, ``guidance_rescale`` and ``sigma_min`` are static Python numbers; everything else may be traced, and
``sample`` can run inside the caller's ``jax.jit`` with the params as traced arguments
(:func:`jit_sample` builds such a function; it compiles once per step count and settings).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.flow.guidance import VelocityFn, evaluate, guided_velocity, weights
from mdt_jax.flow.schedules import euler_schedule
from mdt_jax.latents import Latent


def sample(velocity_fn: VelocityFn, noise: Latent, *, steps: int, rescale_t: float = 1.0, cond: Any = None,
           neg_cond: Any = None, cfg_strength: float | None = None, cfg_interval: tuple[float, float] = (0.0, 1.0),
           convention: str = "trellis", guidance_rescale: float = 0.0, sigma_min: float = 1e-5,
           concat_cond: Latent | None = None, return_trajectory: bool = True):
  """Integrates dx/dt = v from t = 1 (``noise``) to t = 0 with ``steps`` Euler steps.

  Args:
    velocity_fn: ``velocity_fn(x, t, cond) -> v`` with x like ``noise`` (dense ``[B, ...]`` or a
      ``SparseTensor``), t [B] float32 flow time in [0, 1] (models embed 1000 t), v like x (for a
      sparse x, a ``SparseTensor`` or its feats array). With guidance it is called on a batch of 2B
      (see ``flow.guidance``). With ``concat_cond`` it is called as
      ``velocity_fn(x, t, cond, concat_cond=c)``.
    noise: x at t = 1; dense ``[B, ...]`` (numpy or jax, float32) or a ``SparseTensor``.
    steps: number of Euler steps (>= 1).
    rescale_t: TRELLIS's time warp of the uniform grid (1: none).
    cond: conditioning passed to ``velocity_fn`` (a pytree of ``[B, ...]`` arrays, or None).
    neg_cond: the unconditional branch's conditioning; zeros like ``cond`` by default (as both
      TRELLIS and TRELLIS.2 pipelines use).
    cfg_strength: the guidance weight, in ``convention``:
      "trellis": w in ``v = (1 + w) v_cond - w v_uncond``, 0 disables guidance;
      "trellis2": g (upstream's ``guidance_strength``) in ``v = g v_cond + (1 - g) v_uncond``, 1
      disables guidance and 0 is the unconditional branch alone. The same velocity for g = 1 + w.
      Where a coefficient is 0, one forward per step. None (default): no guidance.
    cfg_interval: (lo, hi), guidance only at steps whose start time t satisfies lo <= t <= hi
      (TRELLIS.2's ``guidance_interval``).
    convention: "trellis" or "trellis2" (see ``cfg_strength``).
    guidance_rescale: TRELLIS.2's CFG-rescale rho (0: off), applied where both branches are used
      (``flow.guidance.rescale``).
    sigma_min: the path's sigma_min, used only by the rescale (the Euler update does not need it).
    concat_cond: TRELLIS.2's texture flow: the normalised shape latent on noise's rows, passed
      unchanged to every call (conditional and unconditional).
    return_trajectory: also return x after each step.
  Returns:
    ``(x0, trajectory)``: x0 like ``noise``; trajectory (None unless asked) is x after each step:
    dense, an array ``[steps, B, ...]``; sparse, a list of ``steps`` SparseTensors sharing the
    noise's coords and mask. Sparse padding rows stay zero.
  """
  if cfg_strength is None:   # no guidance, whatever the convention
    cfg_strength = {"trellis": 0.0, "trellis2": 1.0}.get(convention, 0.0)
  _, b = weights(cfg_strength, convention)
  schedule = euler_schedule(steps, rescale_t, cfg_interval, -b)   # -b: the TRELLIS-convention weight
  x = noise if latents.is_sparse(noise) else jnp.asarray(noise)
  if cond is not None:
    cond = jax.tree.map(jnp.asarray, cond)
  if schedule.guidance.any():
    if cond is None:
      raise ValueError("sample: guidance (cfg_strength) needs cond (and optionally neg_cond)")
    neg_cond = jax.tree.map(jnp.zeros_like, cond) if neg_cond is None else jax.tree.map(jnp.asarray, neg_cond)
  batch = latents.batch_size(x)
  valid = latents.valid_mask(x)

  def plain(xi, t):
    return latents.feats(evaluate(velocity_fn, [(xi, t, cond)], concat_cond=concat_cond)[0])

  if not schedule.guidance.any():
    velocity = lambda xi, t, on: plain(xi, t)
  else:
    guided = guided_velocity(velocity_fn, cond, neg_cond, cfg_strength, convention=convention,
                             guidance_rescale=guidance_rescale, sigma_min=sigma_min, concat_cond=concat_cond)
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
  """``apply_fn(params, x, t, cond) -> v`` -> a jitted ``(params, noise, cond=None, neg_cond=None,
  concat_cond=None, *, steps, rescale_t=1.0, cfg_strength=None, cfg_interval=(0.0, 1.0),
  convention="trellis", guidance_rescale=0.0, sigma_min=1e-5, return_trajectory=False)``.

  The params are a traced argument (never compile-time constants) and the settings are static
  (``cfg_interval`` a tuple): one compilation per step count and settings.
  """
  def run(params, noise, cond=None, neg_cond=None, concat_cond=None, *, steps, rescale_t=1.0, cfg_strength=None,
          cfg_interval=(0.0, 1.0), convention="trellis", guidance_rescale=0.0, sigma_min=1e-5,
          return_trajectory=False):
    return sample(functools.partial(apply_fn, params), noise, steps=steps, rescale_t=rescale_t, cond=cond,
                  neg_cond=neg_cond, cfg_strength=cfg_strength, cfg_interval=cfg_interval, convention=convention,
                  guidance_rescale=guidance_rescale, sigma_min=sigma_min, concat_cond=concat_cond,
                  return_trajectory=return_trajectory)

  return jax.jit(run, static_argnames=("steps", "rescale_t", "cfg_strength", "cfg_interval", "convention",
                                       "guidance_rescale", "sigma_min", "return_trajectory"))
