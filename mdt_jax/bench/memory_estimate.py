"""An analytic per-device memory estimate of a distillation train step (launch/train_memory.py).

XLA:CPU's ahead-of-time plan of a whole L step measures its schedule, not what the step needs: its
schedulers may compute anything as soon as its inputs exist. On slat_flow_L (fsdp mesh, jax 0.12.1)
the default one computed every block's per-token modulation, 5 [tokens, 1024] arrays a block for each
of the teacher's, the student's and the no-gradient student's passes, ahead of the blocks: 67 of a
91 GiB plan, until the blocks tied their modulation to their input (models/transformer.py); the
memory-optimised one (--xla_cpu_scheduler_type) ran all 24 rematerialised blocks' recomputations
before the backward chain: 116 GiB. This estimate counts what the program has to hold instead, per
device, each term from shapes:

  arguments   params, EMA, optimizer state, teacher, encoder and the step's batch, as sharded (exact).
  gathered    the float32 params the networks compute with, all-gathered over fsdp: student, teacher,
              encoder (exact; 0 when fsdp is 1: the arguments are already whole).
  residuals   the activations the backward pass keeps: the residuals of ``jax.vjp`` of the objective
              with respect to the student's params, each value once, not counting the vjp's own
              inputs (exact for the JAX program, read from its jaxpr; under the model's remat policy).
  gradients   the student's float32 gradient at its gathered shape, every leaf at once (an upper
              bound: each could be reduce-scattered as soon as it is done), plus the accumulator
              over micro-batches, sharded as the params.
  block fwd   one transformer block's forward at the most tokens any pass feeds it (the teacher's),
              as XLA:CPU plans that block alone: temporaries + output + its inputs other than params.
  block bwd   one block's forward and backward (what a rematerialised block recomputes, then its
              backward) at the student's tokens, planned the same way, less its param gradients
              (counted in ``gradients``).

The step's phases and its peak, the largest of them:
  forward   arguments + gathered + residuals + block fwd            (the teacher's pass)
  backward  arguments + gathered + residuals + gradients + block bwd
  update    arguments + a second state (the guard keeps old and new until all are finite) + accumulator

Not counted: the transients of the io stages' sparse res blocks (128 channels where the trunk has
1024; their residuals are in ``residuals``), of the DINOv2 forward (it runs before the student's,
when no residual is live yet) and the latents of the passes ([rows, 8]). XLA:CPU computes bfloat16
elementwise ops in float32 (e.g. a [tokens, 4C] float32 MLP hidden), so the block plans overstate
an accelerator's. Attention is whatever the models call: mdt_jax/bench/train_memory.py installs the
flash stand-in (mdt_jax/bench/flash_memory.py) first.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.extend as jex
import jax.numpy as jnp
import numpy as np

from mdt_jax import latents
from mdt_jax.distill.objective import objective
from mdt_jax.models import registry
from mdt_jax.models.attention import Packing
from mdt_jax.models.transformer import ModulatedTransformerCrossBlock


def tree_bytes(tree) -> int:
  """Bytes one device holds of a tree of arrays or ShapeDtypeStructs (its shard where it has a sharding)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    shape = sharding.shard_shape(leaf.shape) if sharding is not None else leaf.shape
    total += int(np.prod(shape)) * np.dtype(leaf.dtype).itemsize
  return total


def residual_bytes(fn, primal, *args) -> int:
  """Bytes of what the backward pass of ``fn(primal, *args)`` with respect to ``primal`` keeps (the
  residuals of ``jax.vjp``): each value once, the inputs themselves not counted. primal, args: trees
  of arrays or ShapeDtypeStructs (nothing is computed)."""
  jaxpr = jax.make_jaxpr(lambda p, *a: jax.vjp(lambda p: fn(p, *a), p)[1])(primal, *args).jaxpr
  inputs = set(jaxpr.invars)
  kept = {v for v in jaxpr.outvars if isinstance(v, jex.core.Var) and v not in inputs}
  return sum(int(np.prod(v.aval.shape)) * np.dtype(v.aval.dtype).itemsize for v in kept)


def evaluations(config) -> tuple[int, int, int]:
  """(student with gradient, teacher, student without gradient): the calls of B samples each pass
  evaluates at once (mdt_jax.distill.objective's table; a JVP counts twice: primal and tangent)."""
  if config.objective == "fm":
    return 1, 0, 0
  branches = 2 if config.objective == "vm_vd" else 1
  if config.distill_type == "continuous" and config.objective != "cm":
    return branches, 2 * branches, 2 * branches
  vd = config.objective in ("vd", "vm_vd")      # VD's branch evaluates the student at its x_t without gradient
  return branches, 2 * branches, branches + int(vd)


@dataclasses.dataclass(frozen=True)
class BlockInputs:
  """Abstract inputs of one transformer block: x [S, N, C], emb [B, C or 6C], cond [S, M, Cc]; in the
  sparse layout (S = 1), segment ids [1, N] and [1, M] and the packing of B samples; with RoPE
  (TRELLIS.2), its (cos, sin) [N, d/2] float32."""
  x: jax.ShapeDtypeStruct
  emb: jax.ShapeDtypeStruct
  cond: jax.ShapeDtypeStruct
  sparse: bool
  samples: int
  rope: tuple | None = None

  def segment_ids(self) -> dict:
    """The block's keyword inputs (abstract): the sparse layout's ``segment_ids`` and ``cond_segment_ids``
    and the ``rope`` tables, where there are any."""
    ids = lambda n: jax.ShapeDtypeStruct((1, n), jnp.int32)
    keywords = dict(segment_ids=ids(self.x.shape[1]), cond_segment_ids=ids(self.cond.shape[1])) if self.sparse else {}
    return keywords | ({"rope": self.rope} if self.rope is not None else {})

  def apply(self, block):
    """-> ``f(params, x, emb, cond, segment_ids) -> out``, the block on these inputs' layout."""
    packing = dict(packing=Packing(num_segments=self.samples)) if self.sparse else {}
    return lambda p, x, e, c, ids: block.apply(p, x, e, c, **ids, **packing)


def block_inputs(model, *, samples: int, tokens: int, cond_tokens: int, sparse: bool) -> BlockInputs:
  """One block's inputs for ``samples`` samples of ``tokens`` tokens each (sparse: all packed in one row of
  ``tokens`` in total) and ``cond_tokens`` condition tokens each, in the model's compute dtype."""
  c, dtype = model.model_channels, model.dtype
  emb = jax.ShapeDtypeStruct((samples, 6 * c if model.share_mod else c), dtype)
  rope = (jax.ShapeDtypeStruct((tokens, c // model.heads // 2), jnp.float32),) * 2 if model.pe_mode == "rope" else None
  if sparse:
    return BlockInputs(jax.ShapeDtypeStruct((1, tokens, c), dtype), emb,
                       jax.ShapeDtypeStruct((1, samples * cond_tokens, model.cond_channels), dtype), True, samples,
                       rope)
  return BlockInputs(jax.ShapeDtypeStruct((samples, tokens, c), dtype), emb,
                     jax.ShapeDtypeStruct((samples, cond_tokens, model.cond_channels), dtype), False, samples, rope)


def _block(model) -> ModulatedTransformerCrossBlock:
  # TRELLIS.2's share_mod blocks add their learned [6C] vector to the shared modulation.
  trellis2_mod = registry.family_of(model) == "trellis2" and model.share_mod
  return ModulatedTransformerCrossBlock(model.model_channels, model.heads, model.mlp_ratio, share_mod=model.share_mod,
                                        qk_rms_norm=model.qk_rms_norm, qk_rms_norm_cross=model.qk_rms_norm_cross,
                                        block_modulation=trellis2_mod, dtype=model.dtype)


def _plan(fn, *args) -> int:
  """XLA's planned temporaries + outputs for ``fn`` at these abstract args."""
  stats = jax.jit(fn).lower(*args).compile().memory_analysis()
  return stats.temp_size_in_bytes + stats.output_size_in_bytes


def _activations(inputs: BlockInputs) -> tuple:
  return inputs.x, inputs.emb, inputs.cond, inputs.segment_ids()


def block_forward_bytes(model, inputs: BlockInputs) -> int:
  """One block's forward alone, as XLA plans it: temporaries + output + its inputs other than params."""
  block, apply = _block(model), inputs.apply(_block(model))
  params = jax.eval_shape(lambda *a: block.init(jax.random.key(0), *a[:3], **a[3]), *_activations(inputs))
  return _plan(apply, params, *_activations(inputs)) + tree_bytes(_activations(inputs))


def block_backward_bytes(model, inputs: BlockInputs) -> int:
  """One block's forward + backward (w.r.t. params and x) alone, as XLA plans it: temporaries +
  outputs + its inputs other than params and the output's cotangent, less the param gradients."""
  block, apply = _block(model), inputs.apply(_block(model))
  params = jax.eval_shape(lambda *a: block.init(jax.random.key(0), *a[:3], **a[3]), *_activations(inputs))

  def backward(p, x, e, c, ids, ct):
    return jax.vjp(lambda p, x: apply(p, x, e, c, ids), p, x)[1](ct)

  ct = jax.ShapeDtypeStruct(inputs.x.shape, inputs.x.dtype)
  planned = _plan(backward, params, *_activations(inputs), ct)
  return planned - tree_bytes(params) + tree_bytes((_activations(inputs), ct))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """Per-device bytes of each term and phase (see the module docstring)."""
  arguments: int
  state: int
  gathered: int
  residuals: int
  gradients: int
  accumulator: int
  block_forward: int
  block_backward: int

  @property
  def phases(self) -> dict[str, int]:
    held = self.arguments + self.gathered + self.residuals
    return {"forward": held + self.block_forward,
            "backward": held + self.gradients + self.accumulator + self.block_backward,
            "update": self.arguments + self.state + self.accumulator}

  @property
  def peak(self) -> int:
    return max(self.phases.values())


def objective_terms(config, model, params, teacher_params, batch: dict, *, gradient_bytes: int) -> dict[str, int]:
  """``residuals``, ``gradients``, ``block_forward`` and ``block_backward`` of one device's micro-batch.

  model: the student (and teacher) Flax module; params, teacher_params: their float32 params as the
  networks compute with them (gathered), arrays or ShapeDtypeStructs; batch: one device's
  ``{"x0": latent, "cond": [B, L, Cc]}`` (and ``concat_cond`` for TRELLIS.2's texture).
  gradient_bytes: the student's gradient at its gathered shape.
  """
  apply = registry.velocity(model)
  loss = lambda p, teacher, b: objective(p, teacher, b, jax.random.key(0), student_apply=apply, teacher_apply=apply,
                                         config=config)[0]
  x0, cond_tokens = batch["x0"], batch["cond"].shape[1]
  samples = latents.batch_size(x0)
  sparse = latents.is_sparse(x0)
  patch = getattr(model, "patch_size", 1)      # TRELLIS.2's dense flow has one token per voxel
  tokens = _tokens_per_call(model, x0) if sparse else (model.resolution // patch) ** 3
  with_grad, teacher, no_grad = evaluations(config)
  per_call = lambda calls: block_inputs(model, samples=calls * samples, tokens=calls * tokens if sparse else tokens,
                                        cond_tokens=cond_tokens, sparse=sparse)
  return dict(residuals=residual_bytes(loss, params, teacher_params, batch), gradients=gradient_bytes,
              block_forward=block_forward_bytes(model, per_call(max(with_grad, teacher, no_grad))),
              block_backward=block_backward_bytes(model, per_call(with_grad)))


def _tokens_per_call(model, x0) -> int:
  """The transformer's tokens for one sparse call: the coarsest level's capacity (TRELLIS.2's sparse
  DiT has no coarser level)."""
  levels = len(getattr(model, "stages", ()))
  return x0.coarse_capacities[levels - 1] if levels else x0.capacity
