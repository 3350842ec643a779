"""TRELLIS's SLatFlowModel (and ElasticSLatFlowModel): the sparse stage-2 U-DiT over active voxels."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mdt_jax.models import initializers
from mdt_jax.models.attention import Packing
from mdt_jax.models.embeddings import TimestepEmbedder, absolute_position_embedding
from mdt_jax.models.norms import LayerNorm32
from mdt_jax.models.sparse_resblock import SparseResBlock3d
from mdt_jax.models.transformer import Elastic, RematPolicy, block_outputs, block_stack, remat_policy
from mdt_jax.sparse.neighbours import neighbour_table
from mdt_jax.sparse.resample import downsampling
from mdt_jax.sparse.tensor import SparseTensor

Dtype = Any



def check_sparse_time_and_cond(name: str, x: SparseTensor, t, cond, cond_channels: int) -> None:
  """t [B] and cond [B, L, cond_channels] for a SparseTensor x of B samples, or a ValueError naming
  ``name`` and the shapes."""
  b = x.batch_size
  if t.shape != (b,) or cond.ndim != 3 or cond.shape[0] != b or cond.shape[-1] != cond_channels:
    raise ValueError(f"{name}: expected t [{b}] and cond [{b}, L, {cond_channels}] for "
                     f"x.batch_size {b}, got t {t.shape}, cond {cond.shape}")

class SLatFlowModel(RematPolicy, nn.Module):
  """Velocity field of the structured-latent (stage-2) rectified flow (fixtures README section 3).

  Fields are TRELLIS's constructor arguments, plus ``dtype``, the compute dtype of the trunk
  (input blocks, transformer blocks, output blocks): float32 by default; float16 reproduces
  TRELLIS's ``use_fp16``; bfloat16 for TPU/GPU. Parameters are always float32. The APE is computed
  in the forward pass at the coarse coordinates (no stored buffer).

  Call: ``model.apply({"params": p}, x, t, cond)`` with ``x`` a :class:`SparseTensor` (coords in
  [0, resolution), feats [cap, in_channels]), ``t`` [B] flow time in [0, 1] (embedded as 1000 t),
  ``cond`` [B, L, cond_channels]; returns a SparseTensor on x's sites and row order, feats
  [cap, out_channels] float32, 0 on padding. ``x.coarse_capacities`` (optional) sets the static
  capacity of each 2x level; if a level's parents do not fit in it, the output is NaN.

  Structure: ``input_layer``; per io stage (``io_block_channels``, each halving the resolution,
  ``patch_size = 2^stages``) ``num_io_res_blocks - 1`` res blocks and one down-sampling res block,
  each output pushed as a skip; APE; ``num_blocks`` transformer blocks under ``nn.scan`` (params
  ``blocks/...`` [num_blocks, ...]), each sample's tokens attending to their own sample and to their
  own condition; the io stages mirrored with up-sampling, each
  block's input being ``[h, skip]`` when ``use_skip_connection``; LayerNorm (eps 1e-5); ``out_layer``.
  With ``share_mod`` the transformer blocks share one ``adaLN_modulation_1`` of the time embedding;
  the res blocks take the time embedding itself.
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
  num_io_res_blocks: int = 2
  io_block_channels: Optional[tuple[int, ...]] = None
  pe_mode: str = "ape"
  use_fp16: bool = False
  use_checkpoint: bool = False
  use_skip_connection: bool = True
  share_mod: bool = False
  qk_rms_norm: bool = False
  qk_rms_norm_cross: bool = False
  dtype: Dtype = jnp.float32

  @property
  def rematerialise(self) -> bool:
    return self.use_checkpoint

  @property
  def heads(self) -> int:
    return self.num_heads or self.model_channels // self.num_head_channels

  @property
  def stages(self) -> tuple[int, ...]:
    """Channels of the io stages, one per 2x resolution level (may be empty)."""
    return tuple(self.io_block_channels or ())

  def example_inputs(self, batch_size: int = 1):
    """One voxel per sample at the origin, t = 0, one condition token (for ``init``/``eval_shape``)."""
    coords = np.zeros((batch_size, 4), np.int32)
    coords[:, 0] = np.arange(batch_size)
    x = SparseTensor.from_packed(coords, np.zeros((batch_size, self.in_channels), np.float32))
    return x, jnp.zeros((batch_size,)), jnp.zeros((batch_size, 1, self.cond_channels))

  def _check(self, x, t, cond):
    name = type(self).__name__
    if self.pe_mode != "ape":
      raise NotImplementedError(f"{name}: pe_mode={self.pe_mode!r} (only 'ape')")
    if 2 ** len(self.stages) != self.patch_size:
      raise ValueError(f"{name}: patch_size {self.patch_size} must be 2^len(io_block_channels) "
                       f"(io_block_channels={self.io_block_channels})")
    if not isinstance(x, SparseTensor) or x.feats.ndim != 2 or x.feats.shape[1] != self.in_channels:
      raise ValueError(f"{name}: x must be a SparseTensor with feats [cap, {self.in_channels}], got "
                       f"{type(x).__name__} {getattr(getattr(x, 'feats', None), 'shape', None)}")
    check_sparse_time_and_cond(name, x, t, cond, self.cond_channels)

  def _res_block_class(self):
    if not self.rematerialise:
      return SparseResBlock3d
    return nn.remat(SparseResBlock3d, policy=remat_policy(self.remat_policy))

  @nn.compact
  def __call__(self, x: SparseTensor, t, cond):
    self._check(x, t, cond)
    c, stages, b = self.model_channels, self.stages, x.batch_size
    res_block = self._res_block_class()

    # The pyramid of sites: neighbour tables per level, the 2x maps between levels.
    tables = [neighbour_table(x.coords, x.mask, resolution=self.resolution, batch_size=b)]
    samplings = []
    coords, mask = x.coords, x.mask
    for level in range(len(stages)):
      capacity = x.coarse_capacities[level] if level < len(x.coarse_capacities) else mask.shape[0]
      sampling = downsampling(coords, mask, resolution=self.resolution >> level, batch_size=b, capacity=capacity)
      coords, mask = sampling.coarse_coords, sampling.coarse_mask
      tables.append(neighbour_table(coords, mask, resolution=self.resolution >> (level + 1), batch_size=b))
      samplings.append(sampling)

    feats = initializers.dense(stages[0] if stages else c, "input_layer")(x.feats.astype(jnp.float32))
    emb = TimestepEmbedder(c, name="t_embedder")(1000.0 * t)
    mod = initializers.dense(6 * c, "adaLN_modulation_1", kernel_init=initializers.ZERO)(nn.silu(emb)) if self.share_mod else emb
    h = SparseTensor(coords=x.coords, feats=feats.astype(self.dtype), mask=x.mask, batch_size=b)
    emb, mod, cond = emb.astype(self.dtype), mod.astype(self.dtype), cond.astype(self.dtype)

    skips, k = [], 0
    for level, ch in enumerate(stages):
      next_ch = stages[level + 1] if level + 1 < len(stages) else c
      for _ in range(self.num_io_res_blocks - 1):
        h = res_block(ch, dtype=self.dtype, name=f"input_blocks_{k}")(h, emb, tables[level], None)
        skips.append(h)
        k += 1
      h = res_block(next_ch, "down", dtype=self.dtype, name=f"input_blocks_{k}")(
          h, emb, tables[level + 1], samplings[level])
      skips.append(h)
      k += 1

    ape = absolute_position_embedding(h.coords[:, 1:], c).astype(self.dtype)
    h = h.replace_feats(packed_blocks(self, h.replace_feats(h.feats + ape), mod, cond))

    k = 0
    for level in reversed(range(len(stages))):
      for j in range(self.num_io_res_blocks):
        if self.use_skip_connection:
          h = h.replace_feats(jnp.concatenate([h.feats, skips.pop().feats], axis=-1))
        up = j == 0
        h = res_block(stages[level], "up" if up else None, dtype=self.dtype, name=f"out_blocks_{k}")(
            h, emb, tables[level], samplings[level] if up else None)
        k += 1

    out = initializers.dense(self.out_channels, "out_layer", kernel_init=initializers.ZERO)(LayerNorm32(1e-5)(h.feats.astype(jnp.float32)))
    out = jnp.where(x.mask[:, None], out, 0)
    overflow = jnp.any(jnp.stack([s.overflow for s in samplings])) if samplings else False
    return x.replace_feats(jnp.where(overflow, jnp.nan, out))


def packed_blocks(model, h: SparseTensor, mod, cond, *, rope=None, block_modulation: bool = False,
                  kernel_stds=None):
  """The transformer blocks of a sparse flow (TRELLIS and TRELLIS.2) over ``h``'s rows, called inside
  ``model``'s compact ``__call__``: all rows as one token row [1, cap, C] with each row's sample
  index as its segment (attention within a sample), the condition [B, L, Cc] flattened to
  [1, B L, Cc] with its own segments; ``mod`` [B, C] or [B, 6C]; ``rope`` (cos, sin) [cap, d/2] or
  None; ``kernel_stds``: the blocks' fresh init (:mod:`initializers`). Returns the new feats
  [cap, C] (0 on padding rows)."""
  b, num_cond = h.batch_size, cond.shape[1]
  tokens = jnp.where(h.mask[:, None], h.feats, 0)[None]
  cond_tokens = cond.reshape(1, b * num_cond, cond.shape[-1])
  cond_segment_ids = jnp.repeat(jnp.arange(b, dtype=jnp.int32), num_cond)[None]
  packing = Packing(num_segments=b)     # a sample may hold every row
  blocks = block_stack(model.num_blocks, remat=model.rematerialise, policy=model.remat_policy)
  tokens, outputs = blocks(model.model_channels, model.heads, model.mlp_ratio, share_mod=model.share_mod,
                           qk_rms_norm=model.qk_rms_norm, qk_rms_norm_cross=model.qk_rms_norm_cross,
                           block_modulation=block_modulation, kernel_stds=kernel_stds, packing=packing,
                           dtype=model.dtype, name="blocks")(
      tokens, mod, cond_tokens, h.segment_ids[None], cond_segment_ids, rope)
  block_outputs(outputs)
  return jnp.where(h.mask[:, None], tokens[0], 0)


class ElasticSLatFlowModel(Elastic, SLatFlowModel):
  """The same network and parameters, its blocks always rematerialised (:class:`Elastic`)."""
