"""MDT-dist regression targets: Velocity Matching (discrete / continuous) and the CM baseline.

Notation (fixtures README section 6): the student ``u_theta`` and the frozen teacher ``v_phi``
are velocity fields called as ``apply(params, x, t, cond)`` with t the flow time in [0, 1]; 1 is
noise. With guidance w the teacher's velocity is ``v_T = (1+w) v_phi(x,t,c) - w v_phi(x,t,c_neg)``.
Velocity Matching regresses ``u_theta(x_t, t)`` on ``v_T - t du/dt`` (the identity u = v - t du/dt
of the marginal-to-data transport u, whose Euler jump ``x_t - t u`` lands on data), with
- discrete: ``du/dt = (sg(u(x_t, t)) - sg(u(x_prev, t_prev))) / D``, ``x_prev = x_t - (t - t_prev) v_T``,
  ``t_prev = t - D`` in float32 (so ``t - t_prev`` is not exactly D, as the reference);
- continuous: ``du/dt = sg(d/ds u(x_t + s v_T, t + s))`` at s = 0, a forward-mode JVP;
- optional d_norm: ``du/dt / (||du/dt|| + c)``, the norm per sample over its valid elements
  (``d_norm_over="sample"``, published); ``"element"`` divides that norm by sqrt(valid elements),
  i.e. ``du/dt / (rms(du/dt) + c)``: each entry stays O(1) whatever the latent size, where the
  published form makes it ~1/sqrt(numel) (so ``t du/dt`` vanishes from the target on large latents).
CM: ``pred = x_t - (t - t_tgt) u(x_t, t)``, ``target = sg(x_prev - (t_prev - t_tgt) u(x_prev, t_prev))``.

One function per target kind (:data:`TARGETS`). Work is batched: for any number of branches (VM on
data, VD on the one-step sample), the teacher runs once on all branches and both guidance halves, and
the student's no-gradient evaluations run once (discrete/CM) or as one JVP (continuous).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.distill.spec import D_NORM_OVER
from mdt_jax.flow.guidance import evaluate, guided
from mdt_jax.flow.paths import diffuse
from mdt_jax.latents import Latent
from mdt_jax.models.attention import forward_mode_autodiff

Apply = Callable[[Any, Latent, jax.Array, jax.Array], Latent]


@flax.struct.dataclass
class Branch:
  """One regression problem of B samples: x0 [latent], noise [latent], t [B], guidance w (scalar).

  ``u_pred``: the student's prediction at (x_t, t), carrying gradient, when the caller has it;
  otherwise it is evaluated here without gradient.
  """
  x0: Latent
  noise: Latent
  t: jax.Array
  cond: jax.Array
  neg_cond: jax.Array
  w: Any
  u_pred: Optional[Latent] = None


Student = Callable[[Latent, jax.Array, jax.Array], Latent]   # the student at fixed (stopped) params


def _jvp(student: Student, x: Latent, t, cond, dx: Latent) -> tuple[Latent, Latent]:
  """(u(x, t), d/ds u(x + s dx, t + s)) at s = 0, differentiating through the features only."""
  def f(values, tt):
    return latents.feats(student(latents.map_feats(lambda _: values, x), tt, cond))
  with forward_mode_autodiff():     # the blocked attention's custom VJP does not take a JVP
    primal, tangent = jax.jvp(f, (latents.feats(x), t), (latents.feats(dx), jnp.ones_like(t)))
  return latents.map_feats(lambda _: primal, x), latents.map_feats(lambda _: tangent, x)


def normalise_per_sample(x: Latent, c: float, over: str = "sample") -> Latent:
  """``x / (||x|| + c)`` with the L2 norm per sample over its valid elements (d_norm); with
  ``over="element"`` the norm is the root mean square over those elements instead."""
  if over not in D_NORM_OVER:
    raise ValueError(f"config.d_norm_over must be one of {D_NORM_OVER}, got {over!r}")
  norm = jnp.sqrt(latents.sample_sum(x, jnp.square(latents.feats(x))))
  if over == "element":
    norm = norm / jnp.sqrt(jnp.maximum(latents.valid_count(x), 1.0))
  return latents.map_feats(lambda f: f / latents.per_sample(x, norm + c), x)


def _scale(x: Latent, s: jax.Array):
  return latents.per_sample(x, s)


def _step_back(student: Student, branches, x_ts, v_teacher, interval: float):
  """The Euler step back by D along the guided teacher and the student's no-gradient evaluations:
  -> (t_prevs [B] each, x_prevs, u_prevs = u(x_prev, t_prev), u_now = sg u(x_t, t)), one pass for all."""
  t_prevs = [b.t - interval for b in branches]
  x_prevs = [latents.map_feats(lambda x, v, b=b, tp=tp: x - _scale(x_t, b.t - tp) * v, x_t, v)
             for x_t, v, b, tp in zip(x_ts, v_teacher, branches, t_prevs)]
  calls = [(x_p, tp, b.cond) for x_p, tp, b in zip(x_prevs, t_prevs, branches)]
  calls += [(x_t, b.t, b.cond) for x_t, b in zip(x_ts, branches) if b.u_pred is None]
  outs = evaluate(student, calls)
  u_prevs, fresh = outs[:len(branches)], iter(outs[len(branches):])
  u_now = [jax.lax.stop_gradient(b.u_pred) if b.u_pred is not None else next(fresh) for b in branches]
  return t_prevs, x_prevs, u_prevs, u_now


def _vm_pairs(branches, x_ts, v_teacher, u_now, du_dt, *, d_norm: bool, d_norm_c: float, d_norm_over: str):
  """VM: (u(x_t, t), sg(v_T - t d)) per branch, d = du/dt, optionally d-normalised."""
  results = []
  for b, x_t, v, u, g in zip(branches, x_ts, v_teacher, u_now, du_dt):
    d = normalise_per_sample(g, d_norm_c, d_norm_over) if d_norm else g
    target = latents.map_feats(lambda v, g: v - _scale(x_t, b.t) * g, v, d)
    results.append((b.u_pred if b.u_pred is not None else u, jax.lax.stop_gradient(target)))
  return results


def discrete_targets(student: Student, branches, x_ts, v_teacher, *, interval: float, d_norm: bool,
                     d_norm_c: float = 0.1, d_norm_over: str = "sample", **_) -> list[tuple[Latent, Latent]]:
  """VM with the finite difference ``du/dt = (sg u(x_t, t) - sg u(x_prev, t_prev)) / D``."""
  _, _, u_prevs, u_now = _step_back(student, branches, x_ts, v_teacher, interval)
  du_dt = [latents.map_feats(lambda a, p: (a - p) / interval, u, up) for u, up in zip(u_now, u_prevs)]
  return _vm_pairs(branches, x_ts, v_teacher, u_now, du_dt, d_norm=d_norm, d_norm_c=d_norm_c, d_norm_over=d_norm_over)


def continuous_targets(student: Student, branches, x_ts, v_teacher, *, d_norm: bool, d_norm_c: float = 0.1,
                       d_norm_over: str = "sample", **_) -> list[tuple[Latent, Latent]]:
  """VM with ``du/dt = sg(d/ds u(x_t + s v_T, t + s))`` at s = 0: one JVP over all branches."""
  primal, tangent = _jvp(student, latents.concat(x_ts), jnp.concatenate([b.t for b in branches]),
                         jnp.concatenate([b.cond for b in branches]), latents.concat(v_teacher))
  u_now, du_dt = latents.split(primal, x_ts), latents.split(tangent, x_ts)
  return _vm_pairs(branches, x_ts, v_teacher, u_now, du_dt, d_norm=d_norm, d_norm_c=d_norm_c, d_norm_over=d_norm_over)


def cm_targets(student: Student, branches, x_ts, v_teacher, *, interval: float, multiphase: int = 1, **_
               ) -> list[tuple[Latent, Latent]]:
  """CM: ``pred = x_t - (t - t_tgt) u(x_t, t)``, ``target = sg(x_prev - (t_prev - t_tgt) u(x_prev, t_prev))``
  with ``t_tgt = floor(t_prev multiphase) / multiphase``."""
  t_prevs, x_prevs, u_prevs, u_now = _step_back(student, branches, x_ts, v_teacher, interval)
  results = []
  for b, x_t, t_prev, x_prev, u_prev, u in zip(branches, x_ts, t_prevs, x_prevs, u_prevs, u_now):
    pred = b.u_pred if b.u_pred is not None else u
    t_tgt = jnp.floor(t_prev * multiphase) / multiphase
    pred_x = latents.map_feats(lambda x, u: x - _scale(x_t, b.t - t_tgt) * u, x_t, pred)
    target = latents.map_feats(lambda x, u: x - _scale(x_t, t_prev - t_tgt) * u, x_prev, u_prev)
    results.append((pred_x, jax.lax.stop_gradient(target)))
  return results


TARGETS = {"discrete": discrete_targets, "continuous": continuous_targets, "cm": cm_targets}


def predictions_and_targets(student_apply: Apply, student_params, teacher_apply: Apply, teacher_params,
                            branches: list[Branch], *, kind: str, interval: float, sigma_min: float,
                            d_norm: bool, d_norm_c: float = 0.1, d_norm_over: str = "sample",
                            multiphase: int = 1, convention: str = "trellis") -> list[tuple[Latent, Latent]]:
  """-> per branch ``(prediction, target)`` of the target ``kind`` (a key of :data:`TARGETS`).

  The teacher runs once on all branches and both guidance halves (each branch's w in
  ``convention``, ``flow.guidance``); the target never carries gradient; the prediction carries it
  when the branch's ``u_pred`` did.
  """
  if kind not in TARGETS:
    raise ValueError(f"target kind must be one of {tuple(TARGETS)}, got {kind!r}")
  student = functools.partial(student_apply, jax.lax.stop_gradient(student_params))
  teacher_params = jax.lax.stop_gradient(teacher_params)
  x_ts = [diffuse(b.x0, b.noise, b.t, sigma_min) for b in branches]
  v_teacher = guided(functools.partial(teacher_apply, teacher_params),
                     [(x_t, b.t, b.cond, b.neg_cond, b.w) for x_t, b in zip(x_ts, branches)], convention=convention)
  return TARGETS[kind](student, branches, x_ts, v_teacher, interval=interval, d_norm=d_norm, d_norm_c=d_norm_c,
                       d_norm_over=d_norm_over, multiphase=multiphase)
