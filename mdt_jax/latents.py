"""Latent arithmetic that is the same maths for dense arrays and :class:`SparseTensor`s.

A dense latent is an array ``[B, ...]``; a sparse one a ``SparseTensor`` whose rows belong to
samples by ``segment_ids``. Flow maths, samplers and objectives use only these functions, so one
code path serves both (padding rows of a sparse latent never enter a sum or a mean).
"""
from __future__ import annotations

from typing import Callable, Union

import jax
import jax.numpy as jnp

from mdt_jax.sparse.tensor import SparseTensor

Latent = Union[jax.Array, SparseTensor]


def is_sparse(x: Latent) -> bool:
  return isinstance(x, SparseTensor)


def feats(x: Latent) -> jax.Array:
  """The values: the dense array itself, or a sparse tensor's ``feats`` [cap, C]."""
  return x.feats if is_sparse(x) else x


def map_feats(fn: Callable[..., jax.Array], x: Latent, *others: Latent) -> Latent:
  """``fn`` over the values of ``x`` and ``others`` (same layout); the result has ``x``'s structure."""
  out = fn(feats(x), *[feats(o) for o in others])
  return x.replace_feats(out) if is_sparse(x) else out


def batch_size(x: Latent) -> int:
  return x.batch_size if is_sparse(x) else x.shape[0]


def per_sample(x: Latent, values: jax.Array) -> jax.Array:
  """Broadcasts per-sample ``values`` [B] to an array that multiplies ``feats(x)`` elementwise."""
  if is_sparse(x):
    return values[jnp.maximum(x.segment_ids, 0)][:, None]
  return values.reshape((-1,) + (1,) * (x.ndim - 1))


def valid_mask(x: Latent) -> jax.Array:
  """1.0 on real elements, 0.0 on padding, broadcastable to ``feats(x)``."""
  if is_sparse(x):
    return x.mask[:, None].astype(x.feats.dtype)
  return jnp.ones((1,) * x.ndim, x.dtype)


def sample_sum(x: Latent, values: jax.Array) -> jax.Array:
  """Sum of ``values`` (shaped like ``feats(x)``) over each sample's valid elements -> [B]."""
  if is_sparse(x):
    rows = jnp.sum(values * valid_mask(x), axis=-1)
    return jax.ops.segment_sum(rows, jnp.maximum(x.segment_ids, 0), num_segments=x.batch_size)
  return jnp.sum(values.reshape(values.shape[0], -1), axis=-1)


def valid_count(x: Latent) -> jax.Array:
  """Number of valid elements per sample -> [B] float32."""
  return sample_sum(x, jnp.ones_like(feats(x), jnp.float32))


def sample_std(x: Latent) -> jax.Array:
  """Per-sample standard deviation of ``x``'s values -> [B], as TRELLIS.2 computes it: a dense
  latent's over all its non-batch elements, unbiased (N - 1, ``torch.std``); a sparse one's over the
  sample's rows x channels, population, one pass: ``sqrt(E[v^2] - E[v]^2)`` (``VarLenTensor.std``)."""
  values = feats(x)
  if not is_sparse(x):
    return jnp.std(values.reshape(values.shape[0], -1), axis=-1, ddof=1)
  n = valid_count(x)
  mean_ = sample_sum(x, values) / n
  return jnp.sqrt(sample_sum(x, jnp.square(values)) / n - jnp.square(mean_))


def mean(x: Latent, values: jax.Array) -> jax.Array:
  """Mean of ``values`` (shaped like ``feats(x)``) over all valid elements of the batch."""
  return jnp.sum(sample_sum(x, values)) / jnp.sum(valid_count(x))


def normal_like(key: jax.Array, x: Latent) -> Latent:
  """Standard normal noise with ``x``'s structure (zero on sparse padding)."""
  f = feats(x)
  noise = jax.random.normal(key, f.shape, f.dtype) * valid_mask(x)
  return map_feats(lambda _: noise, x)


def concat(xs: list[Latent]) -> Latent:
  """Stacks k batches of B samples into one batch of k*B (sample j of part i -> i*B + j).

  Used to run several network evaluations as one forward pass. Sparse parts keep their rows
  (and padding) in order, with batch indices offset (padding rows may sit between samples: the
  sparse ops key rows by (b, x, y, z) and mask, not by position); their ``coarse_capacities`` add.
  """
  if not is_sparse(xs[0]):
    return jnp.concatenate(xs, axis=0)
  b = xs[0].batch_size
  coords = [x.coords.at[:, 0].add(jnp.where(x.mask, i * b, 0)) for i, x in enumerate(xs)]
  coarse = tuple(sum(level) for level in zip(*[x.coarse_capacities for x in xs]))
  return SparseTensor(coords=jnp.concatenate(coords), feats=jnp.concatenate([x.feats for x in xs]),
                      mask=jnp.concatenate([x.mask for x in xs]), batch_size=b * len(xs),
                      coarse_capacities=coarse if len(coarse) == len(xs[0].coarse_capacities) else ())


def split(x: Latent, like: list[Latent]) -> list[Latent]:
  """Inverse of :func:`concat`: cuts ``x`` into parts laid out like ``like``."""
  if not is_sparse(x):
    return jnp.split(x, len(like), axis=0)
  out, start = [], 0
  for part in like:
    rows = slice(start, start + part.capacity)
    out.append(part.replace_feats(x.feats[rows]))
    start += part.capacity
  return out
