"""What TRELLIS.2's flow transformers share: their constructor arguments and the per-module dtype rule.

TRELLIS.2 keeps TRELLIS's class names (``SparseStructureFlowModel``, ``SLatFlowModel``,
``ElasticSLatFlowModel``) with other constructor arguments; ``mdt_jax.models.registry`` tells the two
families apart by those (docs/design.md, TRELLIS.2). Differences from TRELLIS (fixtures README
sections 2.2-2.6): no patchify, no sparse U-Net, 3-D RoPE after the q/k RMS norm, ``share_mod`` as one
shared adaLN Linear plus a learned per-block vector, MLP width ``int(C * mlp_ratio)``.

``dtype`` is TRELLIS.2's own config argument ("float32", "bfloat16"): the compute dtype of every
Linear inside the blocks, the shared modulation, the tokens and the condition being cast to it
before the blocks and the tokens back to float32 after; norms and RoPE compute in float32. The
time embedding, ``input_layer``, the shared ``adaLN_modulation``, ``pos_emb`` and ``out_layer``
stay float32. It is our modules' compute-dtype field, so ``load_checkpoint(stem, dtype=...)``
overrides it and a saved config records the model's compute dtype. Parameters are float32 in
memory whatever the dtype.
"""
from __future__ import annotations

from typing import Any, ClassVar, Optional

import flax.linen as nn
import jax.numpy as jnp

from mdt_jax.models import initializers
from mdt_jax.models.rope import rotation
from mdt_jax.models.transformer import RematPolicy

Dtype = Any
PE_MODES = ("ape", "rope")
INITIALIZATIONS = ("vanilla", "scaled")


class Trellis2Flow(RematPolicy, nn.Module):
  """The constructor arguments of TRELLIS.2's flows (upstream's names and defaults). A fresh init
  follows ``initialization`` (:mod:`mdt_jax.models.initializers`); the per-block ``modulation``
  vector of ``share_mod`` starts at zero (our choice: with the zero adaLN and output layer, every
  block starts as the identity)."""
  family: ClassVar[str] = "trellis2"
  dtype_in_config: ClassVar[bool] = True     # the config's "dtype" string is the compute dtype
  resolution: int
  in_channels: int
  model_channels: int
  cond_channels: int
  out_channels: int
  num_blocks: int
  num_heads: Optional[int] = None
  num_head_channels: int = 64
  mlp_ratio: float = 4
  pe_mode: str = "ape"
  rope_freq: tuple[float, float] = (1.0, 10000.0)
  use_checkpoint: bool = False
  share_mod: bool = False
  initialization: str = "vanilla"
  qk_rms_norm: bool = False
  qk_rms_norm_cross: bool = False
  dtype: Dtype = jnp.float32

  @property
  def heads(self) -> int:
    return self.num_heads or self.model_channels // self.num_head_channels

  @property
  def head_dim(self) -> int:
    return self.model_channels // self.heads

  @property
  def rematerialise(self) -> bool:
    return self.use_checkpoint

  def check_config(self):
    """ValueError naming the field for a ``pe_mode`` or ``initialization`` upstream does not have."""
    name = type(self).__name__
    if self.pe_mode not in PE_MODES:
      raise ValueError(f"{name} (TRELLIS.2): pe_mode must be one of {PE_MODES}, got {self.pe_mode!r}")
    if self.initialization not in INITIALIZATIONS:
      raise ValueError(f"{name} (TRELLIS.2): initialization must be one of {INITIALIZATIONS}, "
                       f"got {self.initialization!r}")

  def block_kernel_stds(self) -> Optional[tuple[float, float]]:
    """The blocks' fresh init: xavier for "vanilla", ``initializers.kernel_stds`` for "scaled"."""
    return initializers.kernel_stds(self.model_channels, self.num_blocks) if self.initialization == "scaled" else None

  def input_kernel_init(self):
    """``input_layer``'s fresh init: xavier for "vanilla", N(0, 1 / in_channels) for "scaled"."""
    if self.initialization == "scaled":
      return nn.initializers.normal(self.in_channels ** -0.5)
    return initializers.LINEAR

  def recomputed_buffers(self) -> dict[str, tuple[int, ...]]:
    """Upstream state-dict buffers that are a function of the config (shape by name): a checkpoint
    may hold them or not; conversion checks their shape and drops them. None here."""
    return {}

  def rope(self, coords):
    """(cos, sin) [N, d/2] of the voxels ``coords`` [N, 3] when ``pe_mode`` is "rope", else None."""
    return rotation(coords, self.head_dim, tuple(self.rope_freq)) if self.pe_mode == "rope" else None
