"""Compiled loss-and-gradient functions: gradients w.r.t. the student only."""
from __future__ import annotations

import functools

import jax

from mdt_jax.distill.objective import objective
from mdt_jax.distill.spec import ObjectiveSpec


def loss_and_grad_fn(*, student_apply, teacher_apply, config):
  """-> jitted ``f(student_params, teacher_params, batch, rng, draws=None) -> ((loss, metrics), grads)``.

  ``grads`` is d loss / d student_params; the teacher is an ordinary (non-differentiated) argument,
  inside which every use is wrapped in ``stop_gradient``. The config's ObjectiveSpec, validated
  here, is closed over (static).
  """
  fn = functools.partial(objective, student_apply=student_apply, teacher_apply=teacher_apply,
                         config=ObjectiveSpec.of(config))
  return jax.jit(jax.value_and_grad(fn, argnums=0, has_aux=True))
