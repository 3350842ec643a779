"""DiT building blocks shared by the dense (SS) and sparse (SLat) flow transformers, and their
stack: ``num_blocks`` identical blocks run under ``nn.scan`` (one block compiled, not N), with their
params stacked on a leading axis, ``params["blocks"][...]`` [num_blocks, ...]; ``conversion`` unstacks
them to TRELLIS's ``blocks.{i}.*`` keys.

Tokens are ``[B, N, C]``. The sparse model passes one row of all its voxels, ``[1, cap, C]``,
with ``segment_ids [1, cap]`` holding each token's sample index (-1 on padding), the condition
flattened to ``[1, B*L, Cc]`` with ``cond_segment_ids``, and the static ``packing`` of the samples
(:class:`mdt_jax.models.attention.Packing`, for the variable-length attention); the maths is the same.

TRELLIS.2's blocks are the same with two options: RoPE on q and k of the self attention (``rope``,
after the q/k RMS norm) and, with ``share_mod``, a learned per-block vector added to the shared
modulation (``block_modulation``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models import initializers
from mdt_jax.models.attention import Packing, attention
from mdt_jax.models.norms import LayerNorm32, MultiHeadRMSNorm
from mdt_jax.models.rope import apply_rope

Dtype = Any


class MultiHeadAttention(nn.Module):
  """Self attention (fused ``to_qkv``) or cross attention (``to_q`` + fused ``to_kv``).

  Optional per-head RMS normalisation of q and k (``q_rms_norm``/``k_rms_norm`` params), then
  optional rotary embedding of q and k (``rope``: (cos, sin), each [N, d/2]; self attention only).
  """
  channels: int
  num_heads: int
  cross: bool = False
  qk_rms_norm: bool = False
  kernel_stds: Optional[tuple[float, float]] = None   # initializers.block_kernels
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, context=None, *, rope=None, q_segment_ids=None, kv_segment_ids=None,
               packing: Packing | None = None):
    b, n, _ = x.shape
    head_dim = self.channels // self.num_heads
    linear, output = initializers.block_kernels(self.kernel_stds)
    dense = lambda feats, name: initializers.dense(feats, name, dtype=self.dtype,
                                                   kernel_init=output if name == "to_out" else linear)
    if self.cross:
      q = dense(self.channels, "to_q")(x).reshape(b, n, self.num_heads, head_dim)
      kv = dense(2 * self.channels, "to_kv")(context)
      kv = kv.reshape(kv.shape[0], kv.shape[1], 2, self.num_heads, head_dim)
      k, v = kv[:, :, 0], kv[:, :, 1]
    else:
      qkv = dense(3 * self.channels, "to_qkv")(x).reshape(b, n, 3, self.num_heads, head_dim)
      q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if self.qk_rms_norm:
      q = MultiHeadRMSNorm(self.num_heads, head_dim, name="q_rms_norm")(q)
      k = MultiHeadRMSNorm(self.num_heads, head_dim, name="k_rms_norm")(k)
    if rope is not None:
      q, k = apply_rope(q, *rope), apply_rope(k, *rope)
    h = attention(q, k, v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids, packing=packing)
    return dense(self.channels, "to_out")(h.reshape(b, n, self.channels))


class FeedForward(nn.Module):
  """``mlp_0`` -> GELU (tanh approximation) -> ``mlp_2``, hidden ``int(mlp_ratio * C)``."""
  channels: int
  mlp_ratio: float = 4.0
  kernel_stds: Optional[tuple[float, float]] = None   # initializers.block_kernels
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    linear, output = initializers.block_kernels(self.kernel_stds)
    h = initializers.dense(int(self.channels * self.mlp_ratio), "mlp_0", dtype=self.dtype, kernel_init=linear)(x)
    h = nn.gelu(h, approximate=True)
    return initializers.dense(self.channels, "mlp_2", dtype=self.dtype, kernel_init=output)(h)


class ModulatedTransformerCrossBlock(nn.Module):
  """adaLN-modulated self attention, plain cross attention, modulated MLP (README section 2.5).

  ``emb``: [B, C] time embedding, or the already-modulated [B, 6C] vector when ``share_mod``;
  with ``block_modulation`` (TRELLIS.2's ``share_mod``) the block's learned ``modulation`` [6C] is
  added to it in float32 (README section 2.4). The modulation is gathered per token by
  ``segment_ids`` when those are given (sparse layout). ``rope``: optional (cos, sin) [N, d/2] of
  the tokens, for the self attention.
  """
  channels: int
  num_heads: int
  mlp_ratio: float = 4.0
  share_mod: bool = False
  qk_rms_norm: bool = False
  qk_rms_norm_cross: bool = False
  block_modulation: bool = False
  kernel_stds: Optional[tuple[float, float]] = None   # None: xavier; TRELLIS.2 "scaled": initializers.kernel_stds
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, cond, *, rope=None, segment_ids=None, cond_segment_ids=None,
               packing: Packing | None = None):
    c = self.channels
    # The modulation and the condition's keys and values depend on (t, cond) only: tied to this block's
    # input, no scheduler can compute every block's [tokens, C] modulation ahead of the blocks (XLA:CPU
    # did, holding all 24 at once: 67 of slat_flow_L's 91 GiB per device; launch/train_memory.py).
    x, emb, cond = jax.lax.optimization_barrier((x, emb, cond))
    if self.block_modulation:
      mod = (self.param("modulation", initializers.ZERO, (6 * c,)) + emb.astype(jnp.float32)).astype(self.dtype)
    elif self.share_mod:
      mod = emb
    else:
      mod = initializers.dense(6 * c, "adaLN_modulation_1", dtype=self.dtype, kernel_init=initializers.ZERO)(nn.silu(emb))
    # Split per sample, then spread to the tokens where each is used: one [tokens, C] gather per use
    # (fusable into its consumer), never a [tokens, 6C] table.
    per_token = (lambda m: m[:, None, :]) if segment_ids is None else (lambda m: m[jnp.maximum(segment_ids, 0)])
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = map(per_token, jnp.split(mod, 6, axis=-1))

    h = LayerNorm32(1e-6, name="norm1")(x) * (1 + scale_msa) + shift_msa
    h = MultiHeadAttention(c, self.num_heads, qk_rms_norm=self.qk_rms_norm, kernel_stds=self.kernel_stds,
                           dtype=self.dtype, name="self_attn")(
                               h, rope=rope, q_segment_ids=segment_ids, kv_segment_ids=segment_ids, packing=packing)
    x = x + gate_msa * h
    h = LayerNorm32(1e-6, affine=True, name="norm2")(x)
    h = MultiHeadAttention(c, self.num_heads, cross=True, qk_rms_norm=self.qk_rms_norm_cross,
                           kernel_stds=self.kernel_stds, dtype=self.dtype, name="cross_attn")(
                               h, cond, q_segment_ids=segment_ids, kv_segment_ids=cond_segment_ids,
                               packing=packing and dataclasses.replace(  # each sample's L condition tokens
                                   packing, kv_capacity=cond.shape[1] // packing.num_segments))
    x = x + h
    h = LayerNorm32(1e-6, name="norm3")(x) * (1 + scale_mlp) + shift_mlp
    h = FeedForward(c, self.mlp_ratio, kernel_stds=self.kernel_stds, dtype=self.dtype, name="mlp")(h)
    return x + gate_mlp * h


class ScanStep(ModulatedTransformerCrossBlock):
  """The block as a scan step (same params, no extra scope): ``(x, emb, cond, segment_ids,
  cond_segment_ids, rope) -> (x, out)``, the new tokens carried, and ``out`` the same tokens when
  intermediates are captured (stacked by the scan for :func:`block_outputs`), else None; the static
  ``packing`` is a field."""
  packing: Packing | None = None

  def __call__(self, x, emb, cond, segment_ids=None, cond_segment_ids=None, rope=None):
    x = super().__call__(x, emb, cond, rope=rope, segment_ids=segment_ids, cond_segment_ids=cond_segment_ids,
                         packing=self.packing)
    return x, (x if self.is_mutable_collection("intermediates") else None)


def remat_policy(name: Optional[str]):
  """A ``jax.checkpoint_policies`` name -> the policy (None: save nothing but the block's inputs)."""
  if name is not None and not hasattr(jax.checkpoint_policies, name):
    raise ValueError(f"unknown jax.checkpoint_policies name {name!r}")
  return name and getattr(jax.checkpoint_policies, name)


def block_stack(num_blocks: int, *, remat: bool, policy: Optional[str] = None, block: Optional[type[nn.Module]] = None,
                in_axes=nn.broadcast) -> type[nn.Module]:
  """``block`` (default ``ModulatedTransformerCrossBlock``) x ``num_blocks`` under ``nn.scan``: built with the
  block's fields (and ``packing``), called as :class:`ScanStep` -> (x [B, N, C], outputs [num_blocks, B, N, C]
  or None). With ``remat`` each block is rematerialised under ``policy``. ``in_axes``: how the step's other
  arguments are passed (default: the same to every block; 0: sliced per block, e.g. the decoders' windows)."""
  block = block or ScanStep
  if remat:
    block = nn.remat(block, policy=remat_policy(policy), prevent_cse=False)  # scan already keeps CSE apart
  return nn.scan(block, variable_axes={"params": 0, "intermediates": 0}, split_rngs={"params": True},
                 in_axes=in_axes, length=num_blocks)


class BlockOutput(nn.Module):
  """The identity, named ``blocks_{i}``: ``capture_intermediates`` records a scanned block's output
  under its TRELLIS module name, as an unrolled block would be recorded."""

  def __call__(self, x):
    return x


def block_outputs(outputs) -> None:
  """When the calling module captures intermediates: each block's output (``outputs``
  [num_blocks, ...], the stack's second result) recorded as ``blocks_{i}``; otherwise ``outputs`` is
  None: nothing."""
  if outputs is not None:
    for i in range(outputs.shape[0]):
      BlockOutput(name=f"blocks_{i}")(outputs[i])


class RematPolicy:
  """The flows' remat policy: not a TRELLIS argument, so a class attribute. ``remat_policy`` is a
  ``jax.checkpoint_policies`` name, or None to save nothing; ``Model.with_remat_policy(name)`` makes a
  variant (same TRELLIS name, same params)."""
  remat_policy: ClassVar[Optional[str]] = None

  @classmethod
  def with_remat_policy(cls, policy: Optional[str]) -> type:
    """This class with another remat policy."""
    remat_policy(policy)
    return type(cls.__name__, (cls,), {"remat_policy": policy, "__module__": cls.__module__,
                                       "__qualname__": cls.__qualname__})


class Elastic:
  """TRELLIS's ``ElasticSLatFlowModel`` memory-saving variants: the same network and parameters,
  the blocks always rematerialised under ``remat_policy`` (default: save nothing;
  ``with_remat_policy`` for another). Mixed in before the model class."""
  remat_policy: ClassVar[Optional[str]] = "nothing_saveable"

  @property
  def rematerialise(self) -> bool:
    return True
