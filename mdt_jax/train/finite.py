"""Finiteness of the training state: the step's update guard and the check of a restored checkpoint.

Every floating-point leaf must be finite except those that use NaN as a marker by design, named in
NAN_MARKERS by their last path key.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NAN_MARKERS = ("norms",)  # optimizer.AdaptiveClipState.norms: NaN marks an empty slot of the ring buffer


def leaf_name(path) -> str:
  """A pytree path as ``a/b/0/c`` (dict keys, attribute names and sequence indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _checked(path, leaf) -> bool:
  last = path[-1] if path else None
  name = getattr(last, "key", getattr(last, "name", None))
  return jnp.issubdtype(leaf.dtype, jnp.floating) and name not in NAN_MARKERS


def all_finite(tree) -> jax.Array:
  """bool []: every checked leaf of ``tree`` is finite (traceable: the step's guard)."""
  flags = [jnp.all(jnp.isfinite(leaf)) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
           if _checked(path, leaf)]
  return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


@jax.jit
def _finite_flags(tree):
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: jnp.all(jnp.isfinite(leaf)) if _checked(path, leaf) else jnp.array(True), tree)


def non_finite_leaves(tree) -> list[str]:
  """Names (``leaf_name``) of the checked leaves of ``tree`` holding a NaN or an infinity; one
  compiled reduction on the devices, one small transfer (a bool per leaf) to the host."""
  flags = jax.device_get(_finite_flags(tree))
  return [leaf_name(path) for path, ok in jax.tree_util.tree_flatten_with_path(flags)[0] if not np.all(ok)]
