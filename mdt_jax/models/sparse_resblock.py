"""TRELLIS's SparseResBlock3d: the time-modulated residual conv block of the SLat flow's io stages."""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models import initializers
from mdt_jax.models.norms import LayerNorm32
from mdt_jax.sparse.conv import SparseConv3d
from mdt_jax.sparse.resample import Downsampling
from mdt_jax.sparse.tensor import SparseTensor

Dtype = Any


class SparseResBlock3d(nn.Module):
  """Fixtures README section 3.3, with ``resample`` None, "down" or "up":

      x <- pool(x) / unpool(x)                     (resampling first)
      h = conv1(SiLU(norm1(x)))                    (norm1: LayerNorm eps 1e-6 with affine)
      h = conv2(SiLU(LN(h) (1 + scale[b]) + shift[b]))
      out = h + skip_connection(x)                 (Linear if C_in != C_out, else identity)

  with ``[scale, shift] = emb_layers_1(SiLU(emb))`` (scale first), b each row's sample.
  Call: ``(x, emb [B, C_emb], neighbours [cap_out, 27] of the output sites, sampling)``; ``sampling``
  is the :class:`Downsampling` between the levels when resampling, else None. Returns a
  SparseTensor on the output sites, features ``[cap_out, out_channels]`` in x's dtype, 0 on padding.
  """
  out_channels: int
  resample: Optional[str] = None
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: SparseTensor, emb, neighbours, sampling: Optional[Downsampling]):
    if self.resample not in (None, "down", "up"):
      raise ValueError(f"SparseResBlock3d: resample must be None, 'down' or 'up', got {self.resample!r}")
    c = self.out_channels
    x, emb = jax.lax.optimization_barrier((x, emb))   # its per-row modulation after its input, as transformer.py
    e = initializers.dense(2 * c, "emb_layers_1", dtype=self.dtype)(nn.silu(emb))
    if self.resample == "down":
      x = sampling.pool(x)
    elif self.resample == "up":
      x = sampling.unpool(x)
    rows = jnp.maximum(x.segment_ids, 0)
    scale, shift = e[rows, :c], e[rows, c:]
    h = LayerNorm32(1e-6, affine=True, name="norm1")(x.feats)
    h = SparseConv3d(c, self.dtype, name="conv1")(nn.silu(h), neighbours)
    h = LayerNorm32(1e-6, name="norm2")(h) * (1 + scale) + shift
    h = SparseConv3d(c, self.dtype, kernel_init=initializers.ZERO, name="conv2")(nn.silu(h), neighbours)
    skip = x.feats if x.feats.shape[-1] == c else initializers.dense(c, "skip_connection", dtype=self.dtype)(x.feats)
    return x.replace_feats(jnp.where(x.mask[:, None], h + skip, 0))
