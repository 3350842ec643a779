"""Classifier-free guidance with both branches in one forward pass.

    v = (1 + w) v(x, t, cond) - w v(x, t, neg_cond)

The conditional and unconditional inputs are concatenated along the batch, the velocity function
runs once on 2B samples, and the output is split again:

* dense ``[B, ...]``: ``concat([x, x])`` and ``concat([cond, neg_cond])``; the first B outputs are
  the conditional branch.
* ``SparseTensor`` (capacity ``cap``, B samples): a tensor of capacity ``2 cap`` and batch size
  2B holding the valid rows of x (samples 0..B-1), then the same rows again with batch indices
  B..2B-1, then all padding rows; so it has the layout ``SparseTensor.from_packed`` gives (samples
  contiguous and in order, padding at the end) whatever x's padding layout, and twice x's
  ``coarse_capacities``. The row order is computed once per sampling run (coords do not change
  while sampling).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.latents import Latent

VelocityFn = Callable[[Latent, jax.Array, Any], Latent]


def _concat(a, b):
  return jax.tree.map(lambda u, v: jnp.concatenate([u, v], axis=0), a, b)


@dataclasses.dataclass(frozen=True)
class PairedBatch:
  """Joins a latent with itself into a batch of 2B and splits outputs of that batch again.

  ``order`` (sparse only): [2 cap] int32, row i of the joined tensor is row ``order[i]`` of
  ``concat([x rows, x rows])``; ``inverse`` its inverse permutation. None for dense latents.
  """
  order: jax.Array | None
  inverse: jax.Array | None

  @classmethod
  def of(cls, x: Latent) -> "PairedBatch":
    if not latents.is_sparse(x):
      return cls(None, None)
    mask2 = jnp.concatenate([x.mask, x.mask])
    copy = jnp.repeat(jnp.arange(2, dtype=jnp.int32), x.capacity)
    order = jnp.argsort(jnp.where(mask2, copy, 2), stable=True).astype(jnp.int32)
    return cls(order, jnp.argsort(order).astype(jnp.int32))

  def join(self, x: Latent) -> Latent:
    """x (the layout this pairing was made for) -> the 2B batch [x ; x]."""
    if self.order is None:
      return _concat(x, x)
    offset = jnp.concatenate([jnp.zeros_like(x.mask, jnp.int32), jnp.where(x.mask, x.batch_size, 0)])
    coords = jnp.concatenate([x.coords, x.coords]).at[:, 0].add(offset)
    # Twice the samples have exactly twice the parents at each coarse level: twice each capacity holds them.
    return x.replace(coords=coords[self.order], feats=jnp.concatenate([x.feats, x.feats])[self.order],
                     mask=jnp.concatenate([x.mask, x.mask])[self.order], batch_size=2 * x.batch_size,
                     coarse_capacities=tuple(2 * c for c in x.coarse_capacities))

  def split(self, y: Latent) -> tuple[jax.Array, jax.Array]:
    """Values of an output of the 2B batch -> (first half, second half), each like ``feats(x)``."""
    values = latents.feats(y)
    if self.inverse is not None:
      values = values[self.inverse]
    half = values.shape[0] // 2
    return values[:half], values[half:]


def guided_velocity(velocity_fn: VelocityFn, x_like: Latent, cond, neg_cond, strength: float
                    ) -> Callable[[Latent, jax.Array], jax.Array]:
  """-> ``fn(x, t)`` returning the values of ``(1 + w) v_cond - w v_uncond`` (one forward on 2B).

  x_like: a latent with the layout sampled (sparse coords and mask are taken from it); cond and
  neg_cond: pytrees of ``[B, ...]`` arrays; t: [B] flow time.
  """
  pair = PairedBatch.of(x_like)
  cond2 = _concat(cond, neg_cond)

  def fn(x: Latent, t: jax.Array) -> jax.Array:
    v_cond, v_uncond = pair.split(velocity_fn(pair.join(x), jnp.concatenate([t, t]), cond2))
    return (1.0 + strength) * v_cond - strength * v_uncond

  return fn
