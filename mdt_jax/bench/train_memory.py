"""Per-device memory of the published train steps on a many-device mesh, compiled ahead of time on CPU
(launch/train_memory.py; ``launch/benchmark.py --only=train_memory`` runs it as a benchmark section).

On the forced CPU devices of the caller (the device count is fixed when jax starts), builds each variant's student, teacher and DINOv2 (shapes only:
``jax.eval_shape``, nothing allocated) for abstract inputs of the published batch (8 per device and
step, in 2 micro-batches of 4), and prints two figures per device:

- the estimate (mdt_jax/bench/memory_estimate.py, whose docstring states what it counts): arguments,
  the all-gathered params, the activations the backward pass keeps (read from the objective's jaxpr,
  under the model's remat policy), the gradients, and one transformer block's forward (teacher) and
  forward + backward (student) as XLA plans that block alone; the peak is the largest of the step's
  forward, backward and update phases. Seconds to a minute.
- XLA's ``compile().memory_analysis()`` of the whole jitted train step (the one launch/train.py runs:
  batch_split micro-batches, the frozen DINOv2 encoding the views inside it): arguments, outputs,
  temporaries and arguments + outputs - aliased (donated) + temporaries. Minutes; ``xla_plan=False``
  skips it. XLA:CPU schedules the whole step as it likes, so this plan is only as good as its
  schedule (see memory_estimate.py for what it once did); the estimate is the figure to quote.

The executable is never run, so the CPU backend's LLVM optimisations are off
(``jax_disable_most_optimizations``): the HLO passes that decide fusion and buffer assignment, hence
the figures, still run, and the compile takes minutes instead of much longer.

Attention (``attention``): XLA:CPU's attention paths store what a GPU's or TPU's flash kernel does
not (the plain path's Lq x Lk scores, the blocked path's float32 per-block stacks), so by default
every attention call is compiled as a stand-in with a flash kernel's memory: its inputs, its output
and the residuals such a kernel saves for the backward pass (q, k, v, out and a float32
log-sum-exp per query and head), and no scores. Its values are meaningless (the program is compiled,
never run). ``attention="compiled"`` keeps the CPU's own attention (an upper bound).

Meshes: ``data`` is the configs' default (pure data parallel: every device holds all params and
optimizer state); ``fsdp`` shards params, EMA, optimizer state, teacher and encoder over 8 devices
(data = devices / 8). These are estimates for the CPU backend's compilation of the same program:
XLA:GPU and XLA:TPU fuse, schedule and lay out bfloat16 differently, so treat them as sizes of the
order to expect, not as measurements on the accelerator.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from conversion import dinov2
from mdt_jax import encoders, stages
from mdt_jax.bench import flash_memory, memory_estimate
from mdt_jax.data.image import IMAGE_SIZE
from mdt_jax.models import registry
from mdt_jax.sparse import SparseShards, SparseTensor, bucket_capacity
from mdt_jax.train import models, partitioning
from mdt_jax.train.inputs import micro_batch_per_device
from mdt_jax.train.optimizer import make_optimizer
from mdt_jax.train.state import init_state
from mdt_jax.train.step import jit_train_step

GIB = 2 ** 30


def _abstract_batch(config, mesh, student, slat_voxels):
  """ShapeDtypeStructs of one step's input: [batch_split, global micro-batch or shards, ...], batch-sharded.
  The condition: views (``cond_image``, encoded in the step) or, with ``data.condition="tokens"``,
  ``config.cond_tokens`` precomputed tokens (``cond``); TRELLIS.2's texture stage adds ``concat_cond``."""
  splits, shards = config.batch_split, int(np.prod([mesh.shape[a] for a in partitioning.BATCH_AXES]))
  micro = micro_batch_per_device(config)
  batch = shards * micro
  spec = lambda *shape, dtype=jnp.float32: jax.ShapeDtypeStruct(
      (splits, *shape), dtype, sharding=NamedSharding(mesh, P(None, partitioning.BATCH_AXES)))
  if config.data.condition == "tokens":
    inputs = {"cond": spec(batch, config.cond_tokens, student.cond_channels)}
  else:
    inputs = {"cond_image": spec(batch, IMAGE_SIZE, IMAGE_SIZE, 3)}
  c = student.out_channels
  if not stages.get(config.stage).sparse:
    return {"x0": spec(batch, *(student.resolution,) * 3, c), **inputs}
  cap = bucket_capacity(micro * slat_voxels)
  # A surface's voxels share a 2x parent about 4 at a time; a third is a conservative parent count.
  coarse = bucket_capacity(micro * slat_voxels // 3)
  x0 = SparseShards(coords=spec(shards, cap, 4, dtype=jnp.int32), feats=spec(shards, cap, c),
                    mask=spec(shards, cap, dtype=jnp.bool_), batch_size=micro,
                    coarse_capacities=(coarse,) * len(getattr(student, "stages", ())))
  if student.in_channels > c:
    inputs["concat_cond"] = spec(shards, cap, student.in_channels - c)
  return {"x0": x0, **inputs}


def _with_shardings(tree, shardings):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), tree, shardings)


def _device_batch(batch, cond):
  """One device's micro-batch of a step's input (drops [batch_split, shards]): x0, cond [B, L, Cc] and
  any concat_cond (a SparseTensor on x0's rows)."""
  x0 = batch["x0"]
  drop = lambda a, lead: jax.ShapeDtypeStruct(a.shape[lead:], a.dtype)
  if isinstance(x0, SparseShards):
    x0 = SparseTensor(coords=drop(x0.coords, 2), feats=drop(x0.feats, 2), mask=drop(x0.mask, 2),
                      batch_size=x0.batch_size, coarse_capacities=x0.coarse_capacities)
  else:
    x0 = jax.ShapeDtypeStruct((cond.shape[0], *x0.shape[2:]), x0.dtype)
  out = {"x0": x0, "cond": cond}
  if "concat_cond" in batch:
    out["concat_cond"] = x0.replace_feats(drop(batch["concat_cond"], 2))
  return out


def estimate(config, mesh, student, encoder, state, frozen, batch) -> memory_estimate.Estimate:
  """mdt_jax.bench.memory_estimate's terms for this step, per device."""
  gathered = lambda tree: _with_shardings(tree, partitioning.gathered_shardings(tree, mesh))
  whole = lambda tree: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)
  copies = [gathered(t) for t in (state.params, frozen)] if mesh.shape["fsdp"] > 1 else []
  micro = micro_batch_per_device(config)
  if encoder is None:
    cond = jax.ShapeDtypeStruct((micro, *batch["cond"].shape[2:]), batch["cond"].dtype)
  else:
    images = jax.ShapeDtypeStruct((micro, IMAGE_SIZE, IMAGE_SIZE, 3), jnp.float32)
    cond = jax.eval_shape(lambda p, x: encoders.encode_images(encoder, p, x), whole(frozen["image_encoder"]), images)
  terms = memory_estimate.objective_terms(config, student, whole(state.params), whole(frozen["teacher"]),
                                          _device_batch(batch, cond),
                                          gradient_bytes=memory_estimate.tree_bytes(gathered(state.params)))
  return memory_estimate.Estimate(arguments=memory_estimate.tree_bytes((state, frozen, batch)),
                                  state=memory_estimate.tree_bytes(state), gathered=memory_estimate.tree_bytes(copies),
                                  accumulator=memory_estimate.tree_bytes(state.params), **terms)


def _xla_plan(config, mesh, optimizer, student, encoder, state, frozen, batch) -> str:
  """XLA's memory_analysis() of the whole compiled step, for one device, as a line."""
  step = jit_train_step(config, optimizer, mesh, partitioning.tree_shardings(state, mesh),
                        partitioning.tree_shardings(frozen, mesh), student=student, teacher=student,
                        image_encoder=encoder)
  start = time.perf_counter()
  stats = step.lower(state, frozen, batch).compile().memory_analysis()
  if stats is None:
    return f"memory_analysis() is unavailable on {jax.default_backend()}"
  peak = (stats.argument_size_in_bytes + stats.output_size_in_bytes - stats.alias_size_in_bytes
          + stats.temp_size_in_bytes)
  return (f"arguments {stats.argument_size_in_bytes / GIB:.2f} GiB, outputs {stats.output_size_in_bytes / GIB:.2f} "
          f"(aliased {stats.alias_size_in_bytes / GIB:.2f}), temporaries {stats.temp_size_in_bytes / GIB:.2f} -> peak "
          f"{peak / GIB:.2f} GiB (compiled in {time.perf_counter() - start:.0f} s)")


def measure(variant: str, config, mesh_name: str, *, slat_voxels: int, xla_plan: bool = True, log=print):
  """The figures of one training config (``variant`` names it in the lines) on mesh ``mesh_name``
  (``data`` or ``fsdp``) of all the devices, one line each to ``log``."""
  config = config.copy_and_resolve_references()
  devices = jax.device_count()
  config.mesh.update({"data": -1, "fsdp": 1} if mesh_name == "data" else {"data": devices // 8, "fsdp": 8})
  mesh = partitioning.make_mesh(config.mesh)
  student = registry.build_model(config.model.to_dict(), dtype=models.compute_dtype(config))
  params = jax.eval_shape(lambda: registry.init_params(student, jax.random.key(0)))
  # The frozen DINOv2 encodes the views inside the step; precomputed tokens need no encoder.
  encoder = None if config.data.condition == "tokens" else dinov2.model_from_config(config.dinov2_config)
  optimizer = make_optimizer(config, params)
  state = jax.eval_shape(lambda p: init_state(p, optimizer, config.ema_rates, config.seed), params)
  frozen = {"teacher": params, "image_encoder": {} if encoder is None else dinov2.param_shapes(encoder)}
  state = _with_shardings(state, partitioning.tree_shardings(state, mesh))
  frozen = _with_shardings(frozen, partitioning.tree_shardings(frozen, mesh))
  batch = _abstract_batch(config, mesh, student, slat_voxels)
  name = (f"train_memory[{variant}, mesh {dict(mesh.shape)}, {config.batch_size_per_device}/device x batch_split "
          f"{config.batch_split}, {config.compute_dtype}]")
  est = estimate(config, mesh, student, encoder, state, frozen, batch)
  gib = lambda b: f"{b / GIB:.2f}"
  log(f"{name}: estimate per device {gib(est.peak)} GiB = max of phases "
        f"{', '.join(f'{k} {gib(v)}' for k, v in est.phases.items())}; terms: arguments {gib(est.arguments)} "
        f"(state {gib(est.state)}), gathered params {gib(est.gathered)}, residuals {gib(est.residuals)}, gradients "
        f"{gib(est.gradients)} + accumulator {gib(est.accumulator)}, block forward {gib(est.block_forward)}, "
        f"block backward {gib(est.block_backward)}")
  if xla_plan:
    log(f"{name}: XLA:CPU's plan of the whole step: "
        f"{_xla_plan(config, mesh, optimizer, student, encoder, state, frozen, batch)}")


def train_memory(configs: dict, meshes: list[str], *, attention: str = "flash", slat_voxels: int = 20_000,
                 xla_plan: bool = True, log=print):
  """:func:`measure` of each training config of ``configs`` ({variant name: config}) on each mesh, with
  the CPU backend's LLVM optimisations off and, for ``attention="flash"``, the flash stand-in."""
  jax.config.update("jax_disable_most_optimizations", True)
  if attention == "flash":
    flash_memory.install()
  log(f"jax {jax.__version__}, {jax.device_count()} forced CPU devices; attention: {attention}")
  for variant, config in configs.items():
    for mesh_name in meshes:
      measure(variant, config, mesh_name, slat_voxels=slat_voxels, xla_plan=xla_plan, log=log)
