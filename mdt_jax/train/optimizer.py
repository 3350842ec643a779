"""AdamW with TRELLIS's adaptive gradient clipping, frozen buffers and EMA of the params."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

# Stored buffers kept in params (docs/design.md, Checkpoints, dtypes, stored buffers): never trained.
FROZEN = ("pos_emb",)


def trainable_mask(params):
  """Pytree of bools: False on frozen leaves (a path ending in one of FROZEN)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) not in FROZEN, params)


class AdaptiveClipState(NamedTuple):
  norms: jax.Array   # [buffer_size] float32 ring buffer of recent finite grad norms (NaN = empty)
  index: jax.Array   # int32, next slot to write


def adaptive_clip(max_norm: float, percentile: float, buffer_size: int) -> optax.GradientTransformation:
  """Clips the global grad norm at ``max_norm`` until ``buffer_size`` finite grad norms have been seen,
  then at min(max_norm, their ``percentile``), the percentile of the last ``buffer_size`` finite
  norms (linear interpolation), as TRELLIS's AdaptiveGradClipper does. The norm recorded is the
  one before clipping; a non-finite norm leaves the buffer unchanged."""

  def init(params):
    del params
    return AdaptiveClipState(jnp.full((buffer_size,), jnp.nan, jnp.float32), jnp.zeros((), jnp.int32))

  def update(grads, state, params=None):
    del params
    norm = optax.tree.norm(grads)
    full = ~jnp.any(jnp.isnan(state.norms))
    limit = jnp.where(full, jnp.minimum(max_norm, jnp.percentile(state.norms, percentile)), max_norm)
    scale = jnp.minimum(1.0, limit / (norm + 1e-6))  # torch's clip_grad_norm_, as TRELLIS calls it
    grads = jax.tree.map(lambda g: g * scale.astype(g.dtype), grads)
    finite = jnp.isfinite(norm)
    state = AdaptiveClipState(
        jnp.where(finite, state.norms.at[state.index].set(norm), state.norms),
        jnp.where(finite, (state.index + 1) % buffer_size, state.index))
    return grads, state

  return optax.GradientTransformation(init, update)


def make_optimizer(config, params) -> optax.GradientTransformation:
  """clip -> AdamW on trainable leaves; frozen leaves get zero updates and stay out of the clip norm."""
  clip = config.grad_clip
  inner = optax.chain(adaptive_clip(clip.max_norm, clip.percentile, clip.buffer_size),
                      optax.adamw(config.lr, b1=config.adam_b1, b2=config.adam_b2, weight_decay=config.weight_decay))
  mask = trainable_mask(params)
  return optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()},
                               jax.tree.map(lambda m: "train" if m else "frozen", mask))


def ema_update(ema, params, rate: float):
  return jax.tree.map(lambda e, p: rate * e + (1.0 - rate) * p, ema, params)
