"""Classifier-free guidance, with all network evaluations of a step batched into one forward pass.

    v = (1 + w) v(x, t, cond) - w v(x, t, neg_cond)

Calls ``(x, t, cond)`` of B samples each are stacked into one batch of k*B with
:func:`mdt_jax.latents.concat` (dense: along the batch axis; sparse: rows appended with their
batch indices offset, coarse capacities added) and the output is cut again with
:func:`mdt_jax.latents.split`. The samplers guide one latent; the distillation objectives guide
the teacher on several (data and one-step samples) in the same single pass.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.latents import Latent

VelocityFn = Callable[[Latent, jax.Array, Any], Latent]


def evaluate(velocity_fn: VelocityFn, calls: Sequence[tuple[Latent, jax.Array, Any]]) -> list[Latent]:
  """Several ``(x, t, cond)`` calls as ONE call of ``velocity_fn`` on their concatenation.

  t: [B] per call; cond: a pytree of ``[B, ...]`` arrays. Returns one output per call, laid out
  like its x (a sparse output may come back from ``velocity_fn`` as a SparseTensor or its feats).
  """
  if len(calls) == 1:
    return [velocity_fn(*calls[0])]
  xs, ts, conds = zip(*calls)
  joined = latents.concat(list(xs))
  out = velocity_fn(joined, jnp.concatenate(ts), jax.tree.map(lambda *c: jnp.concatenate(c), *conds))
  if latents.is_sparse(joined) and not latents.is_sparse(out):
    out = joined.replace_feats(out)
  return latents.split(out, list(xs))


def guided(velocity_fn: VelocityFn, calls: Sequence[tuple[Latent, jax.Array, Any, Any, Any]]) -> list[Latent]:
  """Guided velocities for calls ``(x, t, cond, neg_cond, w)``: both halves of every call in one
  forward pass of ``velocity_fn``; w may be a Python float or a traced scalar."""
  outs = evaluate(velocity_fn, [c for x, t, cond, neg, _ in calls for c in ((x, t, cond), (x, t, neg))])
  return [latents.map_feats(lambda a, b, w=w: (1 + w) * a - w * b, outs[2 * i], outs[2 * i + 1])
          for i, (*_, w) in enumerate(calls)]


def guided_velocity(velocity_fn: VelocityFn, cond, neg_cond, strength: float
                    ) -> Callable[[Latent, jax.Array], jax.Array]:
  """-> ``fn(x, t)`` returning the values (``latents.feats``) of the guided velocity at x."""
  def fn(x: Latent, t: jax.Array) -> jax.Array:
    return latents.feats(guided(velocity_fn, [(x, t, cond, neg_cond, strength)])[0])
  return fn
