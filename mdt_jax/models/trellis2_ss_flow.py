"""TRELLIS.2's SparseStructureFlowModel: the dense stage-1 DiT, one token per voxel (no patchify)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models.embeddings import absolute_position_embedding, grid_coords
from mdt_jax.models.ss_flow import check_dense_inputs, check_pos_emb, dense_flow
from mdt_jax.models.trellis2_flow import Trellis2Flow


class SparseStructureFlowModel(Trellis2Flow):
  """Velocity field of TRELLIS.2's sparse-structure flow (fixtures README sections 2.1-2.6).

  Fields: :class:`~mdt_jax.models.trellis2_flow.Trellis2Flow`. Voxel (i, j, k) is token
  i R^2 + j R + k; with ``pe_mode="ape"`` the stored ``pos_emb`` [R^3, C] is kept in ``params`` and
  used as stored (as TRELLIS's), with "rope" the angles of the voxel grid are computed here (the
  upstream ``rope_phases`` buffer is not a parameter: :meth:`recomputed_buffers`).

  Call: ``model.apply({"params": p}, x, t, cond)`` with ``x`` [B, R, R, R, in_channels]
  channels-last, ``t`` [B] flow time in [0, 1] (embedded as 1000 t), ``cond``
  [B, L, cond_channels]; returns the velocity, [B, R, R, R, out_channels] float32.
  """

  def example_inputs(self, batch_size: int = 1):
    """Zero inputs of the right shapes (for ``init`` and ``jax.eval_shape``)."""
    r = self.resolution
    return (jnp.zeros((batch_size, r, r, r, self.in_channels)), jnp.zeros((batch_size,)),
            jnp.zeros((batch_size, 1, self.cond_channels)))

  def recomputed_buffers(self) -> dict[str, tuple[int, ...]]:
    """With rope, upstream's complex ``rope_phases`` [R^3, d/2] (the angles of the voxel grid)."""
    return {"rope_phases": (self.resolution ** 3, self.head_dim // 2)} if self.pe_mode == "rope" else {}

  def check_params(self, params, source: str):
    if self.pe_mode == "ape":
      check_pos_emb(params["pos_emb"], self.pos_emb_table(), source,
                    f"a {self.resolution}^3 grid with {self.model_channels} channels; wrong resolution/channels?")

  def pos_emb_table(self) -> jax.Array:
    """[R^3, C] float32 APE of the voxel grid (README section 2.3)."""
    return absolute_position_embedding(grid_coords(self.resolution), self.model_channels)

  @nn.compact
  def __call__(self, x, t, cond):
    self.check_config()
    check_dense_inputs(self, x, t, cond)
    pos_emb = self.param("pos_emb", lambda _: self.pos_emb_table()) if self.pe_mode == "ape" else None
    return dense_flow(self, x, t, cond, patch_size=1, pos_emb=pos_emb, rope=self.rope(grid_coords(self.resolution)),
                      block_modulation=self.share_mod, kernel_stds=self.block_kernel_stds(),
                      input_init=self.input_kernel_init())
