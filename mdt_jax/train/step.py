"""The one builder of a training step: objective + optimizer -> jitted (sharded, donated) step.

``make_train_step`` builds the step function (gradient accumulation over micro-batches, the
non-finite guard, EMA) from an objective's spec and the networks' velocity functions;
``jit_train_step`` jits it with explicit shardings and the state donated. Training
(``launch/train.py``), the demo's distillation runs and ``launch/benchmark.py`` all step through it.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from mdt_jax import encoders, stages
from mdt_jax.distill import ObjectiveSpec, objective
from mdt_jax.models import registry
from mdt_jax.sparse import SparseTensor
from mdt_jax.train.finite import all_finite
from mdt_jax.train.partitioning import gathered_shardings, replicated
from mdt_jax.train.optimizer import ema_update, trainable_mask
from mdt_jax.train.state import TrainState


def per_device(loss_fn):
  """``loss_fn`` on a sparse batch laid out per device (docs/design.md, Sparse tensors): -> a loss
  function of the same signature ``(params, teacher_params, batch, rng) -> (loss, metrics)``.

  batch["x0"]: SparseShards (coords [D, cap, 4], feats [D, cap, C], mask [D, cap], n = batch_size
  instances a device, static coarse capacities); batch["cond"] [D*n, L, C]; optional
  batch["concat_cond"] (TRELLIS.2's texture stage) feats [D, cap, C'] on x0's rows. Each device's share is
  its own SparseTensor; the loss is the mean of the per-device losses (as data-parallel training
  averages each rank's mean), the metrics likewise.
  """
  def per_device_loss(params, teacher_params, batch, rng):
    x0 = batch["x0"]
    devices = x0.coords.shape[0]
    cond = batch["cond"].reshape(devices, x0.batch_size, *batch["cond"].shape[1:])
    concat = batch.get("concat_cond")

    def one(coords, feats, mask, cond_d, concat_d, key):
      tensor = SparseTensor(coords=coords, feats=feats, mask=mask, batch_size=x0.batch_size,
                            coarse_capacities=x0.coarse_capacities)
      device_batch = {"x0": tensor, "cond": cond_d}
      if concat_d is not None:
        device_batch["concat_cond"] = tensor.replace_feats(concat_d)
      return loss_fn(params, teacher_params, device_batch, key)

    losses, metrics = jax.vmap(one)(x0.coords, x0.feats, x0.mask, cond, concat, jax.random.split(rng, devices))
    metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
    return jnp.mean(losses), metrics
  return per_device_loss


def with_condition(batch: dict, encoder_params, encode_image) -> dict:
  """The model's condition ``cond [B, L, C]`` float32: precomputed tokens (any float dtype) as they are,
  or ``cond_image [B, H, W, 3]`` encoded by the frozen image encoder (no gradient flows into it)."""
  batch = dict(batch)
  if "cond_image" in batch:
    batch["cond"] = encode_image(encoder_params, batch.pop("cond_image"))
  batch["cond"] = batch["cond"].astype(jnp.float32)
  return batch


def make_train_step(config, optimizer, *, student_apply, teacher_apply, sparse: bool, encode_image=None,
                    gather=lambda tree: tree):
  """-> ``train_step(state, frozen, micro_batches) -> (state, metrics)``, unjitted.

  config: the objective's fields (turned into an ObjectiveSpec here, validated before anything is
  traced: the step closes over the spec, never the config) and ``ema_rates``. student_apply /
  teacher_apply: velocity functions (``registry.velocity``). sparse: the batch is laid out per
  device (:func:`per_device`).

  frozen: ``{"teacher": params or {}, "image_encoder": params or {}}``, never differentiated.
  micro_batches: the step's batch as ``config.batch_split`` micro-batches stacked on a leading axis
  (``batch_size_per_device / batch_split`` instances per batch shard each, as TrainInputs yields).
  encode_image: ``(encoder_params, images [B, H, W, 3]) -> cond [B, L, C]``, for batches holding
  ``cond_image``. gather: params tree -> the params the networks compute with (jit_train_step's
  all-gather over fsdp; its transpose reduce-scatters the gradients). Gradients are taken w.r.t. the
  student only and averaged over the micro-batches. The guard, decided on the devices: a step is
  applied only if its loss, gradient norm, new params, EMA and optimizer state are all finite
  (finite.all_finite); otherwise params, optimizer and EMA stay as they were and the step is counted
  in ``state.skipped`` and ``state.consecutive_skips`` (reset by the next applied step).
  """
  loss_fn = functools.partial(objective, student_apply=student_apply, teacher_apply=teacher_apply,
                              config=ObjectiveSpec.of(config))
  if sparse:
    loss_fn = per_device(loss_fn)
  grad_fn = jax.value_and_grad(lambda params, *args: loss_fn(gather(params), *args), has_aux=True)
  ema_rates = tuple(config.ema_rates)

  def train_step(state: TrainState, frozen, micro_batches):
    rng = jax.random.fold_in(state.rng, state.step)
    frozen = gather(frozen)

    def accumulate(grads_sum, inputs):
      index, micro = inputs
      micro = with_condition(micro, frozen["image_encoder"], encode_image)
      (_, metrics), grads = grad_fn(state.params, frozen["teacher"], micro, jax.random.fold_in(rng, index))
      return jax.tree.map(jnp.add, grads_sum, grads), metrics

    splits = jax.tree.leaves(micro_batches)[0].shape[0]
    zeros = jax.tree.map(jnp.zeros_like, state.params)
    grads, metrics = jax.lax.scan(accumulate, zeros, (jnp.arange(splits), micro_batches))
    # Frozen buffers (pos_emb) get no gradient: neither applied nor part of the norm.
    grads = jax.tree.map(lambda g, m: g / splits if m else jnp.zeros_like(g), grads, trainable_mask(grads))
    metrics = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)

    grad_norm = optax.tree.norm(grads)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = tuple(ema_update(e, params, r) for e, r in zip(state.ema, ema_rates))
    finite = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(grad_norm) & all_finite(params) & all_finite(ema)
              & all_finite(opt_state))
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    new_state = state.replace(step=state.step + 1, params=keep(params, state.params), ema=keep(ema, state.ema),
                              opt_state=keep(opt_state, state.opt_state),
                              skipped=state.skipped + (~finite).astype(jnp.int32),
                              consecutive_skips=jnp.where(finite, 0, state.consecutive_skips + 1))
    metrics = {**metrics, "grad_norm": grad_norm, "skipped": new_state.skipped,
               "consecutive_skips": new_state.consecutive_skips}
    return new_state, metrics

  return train_step


def jit_train_step(config, optimizer, mesh, state_shardings, frozen_shardings, *, student, teacher=None,
                   image_encoder=None):
  """``make_train_step`` for these Flax modules, jitted with explicit shardings and the state donated:
  ``(state, frozen, micro_batches) -> (state, metrics)``; metrics come back replicated. The networks
  compute with their params all-gathered over fsdp (partitioning.gathered_shardings)."""
  step_fn = make_train_step(
      config, optimizer, student_apply=registry.velocity(student),
      teacher_apply=registry.velocity(teacher) if teacher is not None else None,
      sparse=stages.get(config.stage).sparse,
      encode_image=functools.partial(encoders.encode_images, image_encoder) if image_encoder is not None else None,
      gather=lambda tree: jax.lax.with_sharding_constraint(tree, gathered_shardings(tree, mesh)))
  return jax.jit(step_fn, in_shardings=(state_shardings, frozen_shardings, None),
                 out_shardings=(state_shardings, replicated(mesh)), donate_argnums=(0,))
