"""The objectives' network evaluations, and those evaluations timed alone (the training step itself
is ``mdt_jax.train.step``'s, as in training).

:func:`network_evaluations` traces an objective's loss-and-gradient abstractly (``jax.eval_shape``)
with the networks wrapped, so the list of evaluations comes from the code itself: who (student or
teacher), how many samples per forward pass (k x B), and how (forward, forward+backward, JVP).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from mdt_jax import latents
from mdt_jax.distill import objective, objective_config
from mdt_jax.models.attention import forward_mode_autodiff

COST = {"fwd": 1, "fwd+bwd": 3, "jvp": 2}      # in forward-FLOP units (mdt_jax.bench.flops)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  network: str      # "student" | "teacher"
  samples: int      # samples in the forward pass
  kind: str         # "fwd" | "fwd+bwd" | "jvp"


def _differentiated(tree) -> bool:
  names = {type(leaf).__name__ for leaf in jax.tree.leaves(tree)}
  return any("JVP" in n or "Linearize" in n for n in names)


def network_evaluations(config, student_apply, teacher_apply, student_params, teacher_params, batch
                        ) -> list[Evaluation]:
  """The network evaluations of one loss-and-gradient of ``config.objective``, in call order."""
  log = []

  def wrap(network, apply):
    def f(params, x, t, cond, **kwargs):   # kwargs: TRELLIS.2's concat_cond
      kind = "fwd+bwd" if _differentiated(params) else ("jvp" if _differentiated(latents.feats(x)) else "fwd")
      log.append(Evaluation(network, latents.batch_size(x), kind))
      return apply(params, x, t, cond, **kwargs)
    return f

  fn = functools.partial(objective, student_apply=wrap("student", student_apply),
                         teacher_apply=wrap("teacher", teacher_apply), config=config)
  jax.eval_shape(jax.value_and_grad(fn, has_aux=True), student_params, teacher_params, batch, jax.random.key(0))
  return log


def describe(evals: list[Evaluation], batch: int) -> str:
  """'student fwd+bwd x2, teacher fwd x4, student fwd x3' (k = samples / batch)."""
  return ", ".join(f"{e.network} {e.kind} x{e.samples // batch}" for e in evals)


def evaluation_fn(apply, kind: str):
  """A standalone jittable ``f(params, x, t, cond)`` doing one evaluation of this kind."""
  if kind == "fwd":
    return lambda p, x, t, c: latents.feats(apply(p, x, t, c))
  if kind == "fwd+bwd":
    def grad(p, x, t, c):
      return jax.grad(lambda p: jnp.sum(latents.feats(apply(p, x, t, c)) ** 2))(p)
    return grad
  def jvp(p, x, t, c):
    f = lambda values, tt: latents.feats(apply(p, latents.map_feats(lambda _: values, x), tt, c))
    with forward_mode_autodiff():
      return jax.jvp(f, (latents.feats(x), t), (latents.feats(x), jnp.ones_like(t)))
  return jvp


def evaluation_inputs(x0, cond, samples: int):
  """(x, t, cond) of ``samples`` samples: copies of the batch concatenated (dense or sparse)."""
  k = samples // latents.batch_size(x0)
  x = latents.concat([x0] * k) if k > 1 else x0
  return x, jnp.full((samples,), 0.5, jnp.float32), jnp.concatenate([cond] * k)


OBJECTIVES = {"fm": dict(objective="fm"), "vm": dict(objective="vm"), "vm_vd": dict(objective="vm_vd"),
              "cm": dict(objective="cm")}


def config_for(name: str):
  """The objective's published settings; no EMA (the step times the objective and the AdamW update)."""
  return objective_config(**OBJECTIVES[name], ema_rates=())
