"""TRELLIS's SparseStructureFlowModel: the dense stage-1 DiT over the 16^3 latent grid."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdt_jax.models import initializers
from mdt_jax.models.embeddings import TimestepEmbedder, absolute_position_embedding, grid_coords
from mdt_jax.models.norms import LayerNorm32
from mdt_jax.models.transformer import RematPolicy, block_outputs, block_stack

Dtype = Any


def patchify(x: jax.Array, p: int) -> jax.Array:
  """[B, D, H, W, C] channels-last -> [B, (D/p)(H/p)(W/p), C p^3] tokens.

  Tokens are row-major over the (d, h, w) patch grid; inside a token the channel order is
  (c, pd, ph, pw) with c slowest, as TRELLIS's channel-first patchify.
  """
  b, d, h, w, c = x.shape
  x = x.reshape(b, d // p, p, h // p, p, w // p, p, c)
  x = x.transpose(0, 1, 3, 5, 7, 2, 4, 6)
  return x.reshape(b, (d // p) * (h // p) * (w // p), c * p ** 3)


def unpatchify(tokens: jax.Array, p: int, grid: int) -> jax.Array:
  """Exact inverse of :func:`patchify` for a cubic ``grid`` of patches."""
  b, _, cp = tokens.shape
  c = cp // p ** 3
  x = tokens.reshape(b, grid, grid, grid, c, p, p, p)
  x = x.transpose(0, 1, 5, 2, 6, 3, 7, 4)
  return x.reshape(b, grid * p, grid * p, grid * p, c)


class SparseStructureFlowModel(RematPolicy, nn.Module):
  """Velocity field of the sparse-structure (stage-1) rectified flow.

  Fields are TRELLIS's constructor arguments, plus ``dtype``, the compute dtype of the transformer
  trunk (float32 by default; float16 reproduces TRELLIS's ``use_fp16``; bfloat16 for TPU/GPU).
  Parameters are always float32. ``pos_emb`` [(R/p)^3, C] is a stored table kept in ``params``
  and used as stored (never trained: the optimiser masks it). The blocks run under ``nn.scan``
  (params ``blocks/...`` [num_blocks, ...]), rematerialised when ``use_checkpoint`` under
  ``remat_policy`` (:class:`mdt_jax.models.transformer.RematPolicy`).

  Call: ``model.apply({"params": p}, x, t, cond)`` with ``x`` [B, R, R, R, in_channels]
  channels-last (axes D, H, W as TRELLIS's NCDHW), ``t`` [B] flow time in [0, 1] (embedded as
  1000 t), ``cond`` [B, L, cond_channels]; returns the velocity, [B, R, R, R, out_channels] float32.
  """
  resolution: int
  in_channels: int
  model_channels: int
  cond_channels: int
  out_channels: int
  num_blocks: int
  num_heads: Optional[int] = None
  num_head_channels: int = 64
  mlp_ratio: float = 4
  patch_size: int = 2
  pe_mode: str = "ape"
  use_fp16: bool = False
  use_checkpoint: bool = False
  share_mod: bool = False
  qk_rms_norm: bool = False
  qk_rms_norm_cross: bool = False
  dtype: Dtype = jnp.float32

  @property
  def heads(self) -> int:
    return self.num_heads or self.model_channels // self.num_head_channels

  @property
  def grid(self) -> int:
    return self.resolution // self.patch_size

  def example_inputs(self, batch_size: int = 1):
    """Zero inputs of the right shapes (for ``init`` and ``jax.eval_shape``)."""
    r = self.resolution
    return (jnp.zeros((batch_size, r, r, r, self.in_channels)), jnp.zeros((batch_size,)),
            jnp.zeros((batch_size, 1, self.cond_channels)))

  def check_params(self, params, source: str):
    """The stored ``pos_emb`` must be the APE table (docs/design.md, Checkpoints, dtypes, stored buffers)."""
    check_pos_emb(params["pos_emb"], self.pos_emb_table(), source,
                  f"a {self.grid}^3 grid with {self.model_channels} channels; wrong resolution/patch_size/channels?")

  def pos_emb_table(self) -> jax.Array:
    """[(R/p)^3, C] float32 APE of the patch grid (fixtures README section 2.3)."""
    return absolute_position_embedding(grid_coords(self.grid), self.model_channels)

  @nn.compact
  def __call__(self, x, t, cond):
    if self.pe_mode != "ape":
      raise NotImplementedError(f"SparseStructureFlowModel: pe_mode={self.pe_mode!r} (only 'ape')")
    check_dense_inputs(self, x, t, cond)
    pos_emb = self.param("pos_emb", lambda _: self.pos_emb_table())
    return dense_flow(self, x, t, cond, patch_size=self.patch_size, pos_emb=pos_emb)


def check_pos_emb(stored, table, source: str, what: str):
  """A stored APE buffer must equal the recomputed ``table`` to within one float16 ulp (docs/design.md,
  Checkpoints, dtypes, stored buffers); ValueError naming ``source`` and ``what`` it should be otherwise."""
  stored, table = np.asarray(stored, np.float32), np.asarray(table)
  ulp = np.spacing(np.abs(table).astype(np.float16)).astype(np.float32)
  worst = np.max(np.abs(stored - table) - ulp)
  if worst > 0:
    raise ValueError(f"{source}: 'pos_emb' differs from the absolute position embedding of {what} by more than "
                     f"one float16 ulp (max excess {worst:.3g})")


def check_dense_inputs(model, x, t, cond):
  """x [B, R, R, R, in_channels] channels-last, t [B], cond [B, L, cond_channels], or a ValueError
  naming the model and the shapes."""
  r, name = model.resolution, type(model).__name__
  if x.ndim != 5 or x.shape[1:] != (r, r, r, model.in_channels):
    raise ValueError(f"{name}: x must be [B, {r}, {r}, {r}, {model.in_channels}] channels-last, got {x.shape}")
  if cond.ndim != 3 or cond.shape[-1] != model.cond_channels or t.shape != x.shape[:1]:
    raise ValueError(f"{name}: expected t [B] and cond [B, L, {model.cond_channels}] for B = {x.shape[0]}, "
                     f"got t {t.shape}, cond {cond.shape}")


def dense_flow(model, x, t, cond, *, patch_size: int, pos_emb=None, rope=None, block_modulation: bool = False,
               kernel_stds=None, input_init=initializers.LINEAR):
  """The dense flow's forward pass (TRELLIS and TRELLIS.2), called inside ``model``'s compact
  ``__call__`` so that the submodules are its own.

  ``input_layer`` on the patch tokens (+ ``pos_emb`` [tokens, C] in float32); time embedding
  (+ the shared ``adaLN_modulation_1`` when ``share_mod``); the trunk in ``model.dtype`` (blocks
  under ``nn.scan``, ``rope`` the tokens' (cos, sin) or None); non-affine LayerNorm (eps 1e-5) and
  ``out_layer`` in float32; un-patchify. Returns [B, R, R, R, out_channels] float32. ``kernel_stds``
  and ``input_init``: the fresh init of the blocks and of ``input_layer`` (:mod:`initializers`).
  """
  c, p = model.model_channels, patch_size
  h = initializers.dense(c, "input_layer", kernel_init=input_init)(patchify(x.astype(jnp.float32), p))
  if pos_emb is not None:
    h = h + pos_emb[None]
  emb = TimestepEmbedder(c, name="t_embedder")(1000.0 * t)
  if model.share_mod:
    emb = initializers.dense(6 * c, "adaLN_modulation_1", kernel_init=initializers.ZERO)(nn.silu(emb))

  blocks = block_stack(model.num_blocks, remat=model.use_checkpoint, policy=model.remat_policy)
  h, emb, cond = h.astype(model.dtype), emb.astype(model.dtype), cond.astype(model.dtype)
  h, outputs = blocks(c, model.heads, model.mlp_ratio, share_mod=model.share_mod, qk_rms_norm=model.qk_rms_norm,
                      qk_rms_norm_cross=model.qk_rms_norm_cross, block_modulation=block_modulation,
                      kernel_stds=kernel_stds, dtype=model.dtype, name="blocks")(h, emb, cond, None, None, rope)
  block_outputs(outputs)
  h = LayerNorm32(1e-5)(h.astype(jnp.float32))
  h = initializers.dense(model.out_channels * p ** 3, "out_layer", kernel_init=initializers.ZERO)(h)
  return unpatchify(h, p, model.resolution // p)
