"""Classifier-free guidance, with all network evaluations of a step batched into one forward pass.

Two conventions for the guidance weight, one formula ``v = a v(x, t, cond) + b v(x, t, neg_cond)``:

* TRELLIS (``convention="trellis"``, ``cfg_strength`` w): ``v = (1 + w) v_pos - w v_neg``;
  w = 0 is no guidance.
* TRELLIS.2 (``"trellis2"``, ``guidance_strength`` g): ``v = g v_pos + (1 - g) v_neg``; g = 1 is no
  guidance, and g = 0 is the negative branch alone.

The same velocity: **g = 1 + w** (TRELLIS.2's default 7.5 is TRELLIS's w = 6.5). Where one
coefficient is 0 the other branch alone is evaluated, one model call (as upstream).

Calls ``(x, t, cond)`` of B samples each are stacked into one batch of k*B with
:func:`mdt_jax.latents.concat` (dense: along the batch axis; sparse: rows appended with their
batch indices offset, coarse capacities added) and the output is cut again with
:func:`mdt_jax.latents.split`. The samplers guide one latent; the distillation objectives guide
the teacher on several (data and one-step samples) in the same single pass.

CFG-rescale (TRELLIS.2, fixtures README section 3, step 3) pulls the per-sample std of the guided
x0 prediction towards the conditional one's: :func:`rescale`.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.flow.paths import noise_scale, x0_from_v
from mdt_jax.latents import Latent

VelocityFn = Callable[..., Latent]
CONVENTIONS = ("trellis", "trellis2")


def weights(strength, convention: str = "trellis"):
  """-> (a, b), the coefficients of ``v_pos`` and ``v_neg`` for a guidance weight of ``convention``
  (see the module docstring); ``strength`` may be traced."""
  if convention == "trellis":
    return 1 + strength, -strength
  if convention == "trellis2":
    return strength, 1 - strength
  raise ValueError(f"guidance convention must be one of {CONVENTIONS}, got {convention!r}")


def evaluate(velocity_fn: VelocityFn, calls: Sequence[tuple[Latent, jax.Array, Any]], *,
             concat_cond: Latent | None = None) -> list[Latent]:
  """Several ``(x, t, cond)`` calls as ONE call of ``velocity_fn`` on their concatenation.

  t: [B] per call; cond: a pytree of ``[B, ...]`` arrays. ``concat_cond`` (a latent on the rows of
  every call's x: TRELLIS.2's texture flow) is repeated alongside and passed as
  ``velocity_fn(x, t, cond, concat_cond=...)``. Returns one output per call, laid out like its x (a
  sparse output may come back from ``velocity_fn`` as a SparseTensor or its feats).
  """
  def call(x, t, cond, n):
    if concat_cond is None:
      return velocity_fn(x, t, cond)
    return velocity_fn(x, t, cond, concat_cond=concat_cond if n == 1 else latents.concat([concat_cond] * n))

  if len(calls) == 1:
    return [call(*calls[0], 1)]
  xs, ts, conds = zip(*calls)
  joined = latents.concat(list(xs))
  out = call(joined, jnp.concatenate(ts), jax.tree.map(lambda *c: jnp.concatenate(c), *conds), len(calls))
  if latents.is_sparse(joined) and not latents.is_sparse(out):
    out = joined.replace_feats(out)
  return latents.split(out, list(xs))


def guided(velocity_fn: VelocityFn, calls: Sequence[tuple[Latent, jax.Array, Any, Any, Any]], *,
           convention: str = "trellis") -> list[Latent]:
  """Guided velocities for calls ``(x, t, cond, neg_cond, w)``, w in ``convention``: both halves of
  every call in one forward pass of ``velocity_fn``; w may be a Python float or a traced scalar."""
  outs = evaluate(velocity_fn, [c for x, t, cond, neg, _ in calls for c in ((x, t, cond), (x, t, neg))])
  return [combine(outs[2 * i], outs[2 * i + 1], *weights(w, convention)) for i, (*_, w) in enumerate(calls)]


def combine(v_pos: Latent, v_neg: Latent, a, b) -> Latent:
  """a v_pos + b v_neg."""
  return latents.map_feats(lambda p, n: a * p + b * n, v_pos, v_neg)


def rescale(x: Latent, v_pos: Latent, v: Latent, t, rho: float, sigma_min: float) -> Latent:
  """CFG-rescale of the guided velocity ``v`` (TRELLIS.2): with x0 = (1 - sigma_min) x - sigma(t) v,
  ``x0 = rho x0_cfg std(x0_pos) / std(x0_cfg) + (1 - rho) x0_cfg``, std per sample
  (:func:`mdt_jax.latents.sample_std`: unbiased on dense latents, population on sparse ones, as
  upstream); returns ``((1 - sigma_min) x - x0) / sigma(t)``."""
  x0_pos, x0_cfg = x0_from_v(x, v_pos, t, sigma_min), x0_from_v(x, v, t, sigma_min)
  ratio = latents.per_sample(x, latents.sample_std(x0_pos) / latents.sample_std(x0_cfg))
  tb = jnp.asarray(t, jnp.float32)
  sigma = noise_scale(tb if tb.ndim == 0 else latents.per_sample(x, tb), sigma_min)
  return latents.map_feats(
      lambda xi, c: ((1 - sigma_min) * xi - (rho * c * ratio + (1 - rho) * c)) / sigma, x, x0_cfg)


def guided_velocity(velocity_fn: VelocityFn, cond, neg_cond, strength: float, *, convention: str = "trellis",
                    guidance_rescale: float = 0.0, sigma_min: float = 1e-5, concat_cond: Latent | None = None
                    ) -> Callable[[Latent, jax.Array], jax.Array]:
  """-> ``fn(x, t)`` returning the values (``latents.feats``) of the guided velocity at x: one
  forward pass of the doubled batch, or of the one branch a zero coefficient leaves; rescaled when
  ``guidance_rescale`` > 0 and both branches are used."""
  a, b = weights(strength, convention)

  def fn(x: Latent, t: jax.Array) -> jax.Array:
    if a == 0 or b == 0:
      return latents.feats(evaluate(velocity_fn, [(x, t, cond if b == 0 else neg_cond)], concat_cond=concat_cond)[0])
    v_pos, v_neg = evaluate(velocity_fn, [(x, t, cond), (x, t, neg_cond)], concat_cond=concat_cond)
    if latents.is_sparse(x):
      v_pos, v_neg = (x.replace_feats(latents.feats(v)) for v in (v_pos, v_neg))
    v = combine(v_pos, v_neg, a, b)
    if guidance_rescale > 0:
      v = rescale(x, v_pos, v, t, guidance_rescale, sigma_min)
    return latents.feats(v)
  return fn
