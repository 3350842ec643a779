"""The training state: everything a resumed run needs, as one pytree (the teacher is not in it)."""
from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp


@flax.struct.dataclass
class TrainState:
  """step: int32 steps taken; params: the student's float32 params; ema: one params tree per EMA
  rate; opt_state: optax state (incl. the adaptive clipper's norm buffer); rng: uint32 [2] root
  key (each step folds in its number); skipped: int32 count of non-finite steps not applied;
  consecutive_skips: int32 count of those since the last applied step."""
  step: jax.Array
  params: dict
  ema: tuple
  opt_state: object
  rng: jax.Array
  skipped: jax.Array
  consecutive_skips: jax.Array


def init_state(params, optimizer, ema_rates, seed: int) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    ema=tuple(jax.tree.map(jnp.copy, params) for _ in ema_rates),
                    opt_state=optimizer.init(params), rng=jax.random.PRNGKey(seed),
                    skipped=jnp.zeros((), jnp.int32), consecutive_skips=jnp.zeros((), jnp.int32))
