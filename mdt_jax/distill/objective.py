"""The training objectives as pure functions: ``(loss, metrics) = objective(student, teacher, batch, rng)``.

``spec.objective`` (``spec``: an :class:`ObjectiveSpec`, built from the config before tracing):
- ``fm``: flow matching (teacher training), ``mean((v(x_t, t, c~) - ((1-sigma_min) eps - x0))^2)``
  with the condition replaced by ``neg_cond`` with probability ``p_uncond``;
- ``vm``, ``vd``, ``vm_vd``: MDT-dist Velocity Matching and/or Velocity Distillation;
- ``cm``: the consistency-distillation baseline (the CM target alone).

Velocity Distillation: ``u_fake = u(eps', t=1)``, ``x_fake = eps' - u_fake``; the VM prediction and
target are computed without gradient at ``x0 := sg(x_fake)`` with guidance w_VD, reusing the VM
step's noise and t unless ``vd_fresh_draws``; ``L_VD = (v_pred - v_tgt + u_fake - sg(u_fake))^2``,
whose gradient is ``2 (v_pred - v_tgt) du_fake/dtheta``.

Network evaluations per step (B samples; "x k" = k*B samples in one forward pass):
| objective | student, with grad | teacher (CFG halves) | student, no grad |
|---|---|---|---|
| fm | 1 (x1) | - | - |
| vm, cm (discrete) | 1 (x1) | 1 (x2) | 1 (x1) |
| vm (continuous) | 1 (x1) | 1 (x2) | 1 JVP (x1) |
| vd (discrete) | 1 (x1) | 1 (x2) | 1 (x2) |
| vm_vd (discrete) | 1 (x2) | 1 (x4) | 1 (x3) |
| vm_vd (continuous) | 1 (x2) | 1 (x4) | 1 JVP (x2) |
i.e. three forward passes (one backward) whatever the objective; the reference runs seven
separate ones for discrete VM+VD.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.flow.paths import diffuse, velocity_target
from mdt_jax.distill import timesteps
from mdt_jax.distill.spec import ObjectiveSpec
from mdt_jax.distill.targets import Branch, predictions_and_targets
from mdt_jax.flow.guidance import evaluate

NUM_T_BINS = 10


def _guidance(key, value) -> Any:
  """A float, or one value drawn per step from a list."""
  if isinstance(value, (list, tuple)):
    return jax.random.choice(key, jnp.asarray(value, jnp.float32))
  return float(value)


def make_draws(rng: jax.Array, x0, spec) -> dict[str, Any]:
  """The random draws of one step, named as in the fixtures' ``draw_order`` (``spec``: an ObjectiveSpec
  or a config)."""
  spec = ObjectiveSpec.of(spec)
  keys = jax.random.split(rng, 5)
  draws = {"noise": latents.normal_like(keys[0], x0),
           "t_z": timesteps.draw_t_z(keys[1], latents.batch_size(x0), spec.t_schedule.name),
           "noise_fake": latents.normal_like(keys[2], x0)}
  if spec.vd_fresh_draws:
    draws["noise_vd"] = latents.normal_like(keys[3], x0)
    draws["t_z_vd"] = timesteps.draw_t_z(keys[4], latents.batch_size(x0), spec.t_schedule.name)
  return draws


def _drop_condition(key, cond, neg_cond, p_uncond: float):
  """Replaces each sample's condition by ``neg_cond`` with probability ``p_uncond``."""
  if p_uncond <= 0:
    return cond
  drop = jax.random.bernoulli(key, p_uncond, (cond.shape[0],))
  return jnp.where(drop[:, None, None], neg_cond, cond)


def _per_sample_mean(x, values):
  return latents.sample_sum(x, values) / latents.valid_count(x)


def with_concat_cond(apply, concat_cond):
  """``apply(params, x, t, cond)`` of a network that takes TRELLIS.2's ``concat_cond`` (the texture
  flow's shape latent, on the rows of the batch's x0): every call's x holds k copies of x0's layout
  (``latents.concat`` of x0-shaped latents), so ``concat_cond`` is repeated k times alongside."""
  def call(params, x, t, cond):
    k = latents.feats(x).shape[0] // latents.feats(concat_cond).shape[0]
    return apply(params, x, t, cond, concat_cond=concat_cond if k == 1 else latents.concat([concat_cond] * k))
  return call


def objective(student_params, teacher_params, batch: dict, rng: jax.Array, *, student_apply, teacher_apply,
              config, draws: Optional[dict] = None):
  """-> (scalar loss, metrics). See the module docstring; docs/design.md, Velocity functions and the objective.

  config: an :class:`ObjectiveSpec` (what jitted callers close over) or a config holding its fields.

  batch: ``x0`` (dense [B, ...] or SparseTensor), ``cond`` [B, L, C], optional ``neg_cond``
  (zeros by default), optional ``concat_cond`` (TRELLIS.2's texture stage: the shape latent on x0's
  rows, passed to both networks on every call: :func:`with_concat_cond`). ``draws`` overrides
  random draws by name (``noise``, ``t_z``, ``noise_fake``).
  metrics: ``loss``, ``loss_vm``, ``loss_vd`` (each with its lambda; 0 when unused), ``loss_cm`` or
  ``loss_fm`` for those objectives, ``t_bin_loss`` [10] (mean loss per
  equal bin of t, 0 where empty) and ``t_bin_count`` [10].
  """
  spec = ObjectiveSpec.of(config)
  x0, cond = batch["x0"], batch["cond"]
  if batch.get("concat_cond") is not None:
    student_apply = with_concat_cond(student_apply, batch["concat_cond"])
    teacher_apply = teacher_apply and with_concat_cond(teacher_apply, batch["concat_cond"])
  neg_cond = batch.get("neg_cond")
  neg_cond = jnp.zeros_like(cond) if neg_cond is None else neg_cond
  key_draws, key_drop, key_w_vm, key_w_vd = jax.random.split(rng, 4)
  draws = {**make_draws(key_draws, x0, spec), **(draws or {})}
  cond = _drop_condition(key_drop, cond, neg_cond, spec.p_uncond)
  t = timesteps.training_time(draws["t_z"], spec)
  sigma_min = spec.sigma_min

  if spec.objective == "fm":
    x_t = diffuse(x0, draws["noise"], t, sigma_min)
    v = student_apply(student_params, x_t, t, cond)
    target = velocity_target(x0, draws["noise"], sigma_min)
    sq = jnp.square(latents.feats(v) - latents.feats(target))
    return _finish(x0, t, {"loss_fm": sq}, {"loss_fm": 1.0})

  use_vm = spec.objective in ("vm", "vm_vd", "cm")
  use_vd = spec.objective in ("vd", "vm_vd")
  ones = jnp.ones_like(t)
  calls = ([(diffuse(x0, draws["noise"], t, sigma_min), t, cond)] if use_vm else []) + (
      [(draws["noise_fake"], ones, cond)] if use_vd else [])
  outs = evaluate(functools.partial(student_apply, student_params), calls)  # the one pass with gradient

  branches = []
  if use_vm:
    branches.append(Branch(x0, draws["noise"], t, cond, neg_cond, _guidance(key_w_vm, spec.cfg_teacher_vm),
                           u_pred=outs[0]))
  if use_vd:
    u_fake = outs[-1]
    x_fake = latents.map_feats(lambda e, u: e - u, draws["noise_fake"], u_fake)
    t_vd = timesteps.training_time(draws["t_z_vd"], spec) if "t_z_vd" in draws else t
    branches.append(Branch(jax.lax.stop_gradient(x_fake), draws.get("noise_vd", draws["noise"]), t_vd, cond,
                           neg_cond, _guidance(key_w_vd, spec.cfg_teacher_vd)))
  pairs = predictions_and_targets(student_apply, student_params, teacher_apply, teacher_params, branches,
                                  kind=spec.target, interval=spec.distill_interval, sigma_min=sigma_min,
                                  d_norm=spec.d_norm, d_norm_c=spec.d_norm_c, d_norm_over=spec.d_norm_over,
                                  multiphase=spec.multiphase, convention=spec.guidance_convention)
  terms, weights = {}, {}
  if use_vm:
    pred, target = pairs[0]
    name = "loss_cm" if spec.objective == "cm" else "loss_vm"
    terms[name] = jnp.square(latents.feats(pred) - latents.feats(target))
    weights[name] = 1.0 if spec.objective == "cm" else spec.lambda_vm
  if use_vd:
    v_pred, v_tgt = pairs[-1]
    fake = latents.feats(u_fake)
    terms["loss_vd"] = jnp.square(latents.feats(v_pred) - latents.feats(v_tgt) + fake - jax.lax.stop_gradient(fake))
    weights["loss_vd"] = spec.lambda_vd
  return _finish(x0, t, terms, weights)


def _finish(x0, t, terms: dict, weights: dict):
  """Weighted sum of the elementwise terms -> (loss, metrics) with means over valid elements."""
  total = sum(weights[k] * v for k, v in terms.items())
  loss = latents.mean(x0, total)
  metrics = {"loss": loss, "loss_vm": jnp.zeros(()), "loss_vd": jnp.zeros(())}
  metrics.update({k: weights[k] * latents.mean(x0, v) for k, v in terms.items()})
  per_sample = _per_sample_mean(x0, total)
  bins = timesteps.t_bins(t, NUM_T_BINS)
  count = jax.ops.segment_sum(jnp.ones_like(per_sample), bins, NUM_T_BINS)
  metrics["t_bin_loss"] = jax.ops.segment_sum(per_sample, bins, NUM_T_BINS) / jnp.maximum(count, 1)
  metrics["t_bin_count"] = count
  return loss, metrics
