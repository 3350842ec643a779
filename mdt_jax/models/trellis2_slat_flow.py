"""TRELLIS.2's SLatFlowModel and ElasticSLatFlowModel: a plain sparse DiT over the active voxels (no
U-Net), for the shape latent and, with ``concat_cond``, the texture latent."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from mdt_jax.models import initializers
from mdt_jax.models.embeddings import TimestepEmbedder, absolute_position_embedding
from mdt_jax.models.norms import LayerNorm32
from mdt_jax.models.slat_flow import check_sparse_time_and_cond, packed_blocks
from mdt_jax.models.transformer import Elastic
from mdt_jax.models.trellis2_flow import Trellis2Flow
from mdt_jax.sparse.tensor import SparseTensor


class SLatFlowModel(Trellis2Flow):
  """Velocity field of TRELLIS.2's structured-latent flows (fixtures README sections 2.2-2.7).

  Fields: :class:`~mdt_jax.models.trellis2_flow.Trellis2Flow` (``resolution`` is not used by the
  forward pass). ``input_layer`` on ``[x.feats, concat_cond.feats]``; APE of the voxel coordinates
  (``pe_mode="ape"``, added in the compute dtype) or RoPE of them ("rope"); the blocks under
  ``nn.scan``, each sample's rows attending to their own sample and condition; non-affine LayerNorm
  (eps 1e-5); ``out_layer``.

  Call: ``model.apply({"params": p}, x, t, cond, concat_cond=None)`` with ``x`` a
  :class:`SparseTensor` (feats [cap, C_x]), ``t`` [B] flow time in [0, 1] (embedded as 1000 t),
  ``cond`` [B, L, cond_channels] and ``concat_cond`` (the texture flow's normalised shape latent:
  a SparseTensor on x's rows, or its feats [cap, C_c]) with C_x + C_c = ``in_channels``; returns a
  SparseTensor on x's rows in x's order, feats [cap, out_channels] float32, 0 on padding.
  """

  def example_inputs(self, batch_size: int = 1):
    """One voxel per sample at the origin, t = 0, one condition token (for ``init``/``eval_shape``)."""
    coords = np.zeros((batch_size, 4), np.int32)
    coords[:, 0] = np.arange(batch_size)
    x = SparseTensor.from_packed(coords, np.zeros((batch_size, self.in_channels), np.float32))
    return x, jnp.zeros((batch_size,)), jnp.zeros((batch_size, 1, self.cond_channels))

  def _inputs(self, x, t, cond, concat_cond):
    """-> the input_layer's input [cap, in_channels], or a ValueError naming the shapes."""
    name = f"{type(self).__name__} (TRELLIS.2)"
    if not isinstance(x, SparseTensor) or x.feats.ndim != 2:
      raise ValueError(f"{name}: x must be a SparseTensor with feats [cap, C], got {type(x).__name__}")
    feats = x.feats
    if concat_cond is not None:
      extra = concat_cond.feats if isinstance(concat_cond, SparseTensor) else concat_cond
      if extra.ndim != 2 or extra.shape[0] != feats.shape[0]:
        raise ValueError(f"{name}: concat_cond must hold one row per row of x ({feats.shape[0]}), "
                         f"got feats {extra.shape}")
      feats = jnp.concatenate([feats, extra.astype(feats.dtype)], axis=-1)
    if feats.shape[1] != self.in_channels:
      raise ValueError(f"{name}: x ({x.feats.shape[1]} channels) and concat_cond together must have "
                       f"in_channels = {self.in_channels} channels, got {feats.shape[1]}")
    check_sparse_time_and_cond(name, x, t, cond, self.cond_channels)
    return feats

  @nn.compact
  def __call__(self, x: SparseTensor, t, cond, concat_cond=None):
    self.check_config()
    feats = self._inputs(x, t, cond, concat_cond)
    c = self.model_channels
    h = initializers.dense(c, "input_layer", kernel_init=self.input_kernel_init())(feats.astype(jnp.float32))
    h = h.astype(self.dtype)
    if self.pe_mode == "ape":
      h = h + absolute_position_embedding(x.coords[:, 1:], c).astype(self.dtype)
    emb = TimestepEmbedder(c, name="t_embedder")(1000.0 * t)
    if self.share_mod:
      emb = initializers.dense(6 * c, "adaLN_modulation_1", kernel_init=initializers.ZERO)(nn.silu(emb))
    h = packed_blocks(self, x.replace_feats(h), emb.astype(self.dtype), cond.astype(self.dtype),
                      rope=self.rope(x.coords[:, 1:]), block_modulation=self.share_mod,
                      kernel_stds=self.block_kernel_stds())
    out = initializers.dense(self.out_channels, "out_layer", kernel_init=initializers.ZERO)(
        LayerNorm32(1e-5)(h.astype(jnp.float32)))
    return x.replace_feats(jnp.where(x.mask[:, None], out, 0))


class ElasticSLatFlowModel(Elastic, SLatFlowModel):
  """The same network and parameters, its blocks always rematerialised (:class:`Elastic`)."""
