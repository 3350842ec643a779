"""TRELLIS's structured-latent VAE networks: ``SLatGaussianDecoder``, ``SLatRadianceFieldDecoder``,
``SLatMeshDecoder`` (up to the FlexiCubes input), ``SLatEncoder``, and their ``ElasticSLat*`` names (the
same networks and state dicts; upstream's mixin only saves memory). Decoder fixtures README, sections 1-4.

All share one trunk (:class:`SLatTrunk`): ``input_layer`` + APE at the raw voxel indices, ``num_blocks``
shifted-window transformer blocks (:mod:`mdt_jax.models.swin`) under ``nn.scan`` (params ``blocks/...``
[num_blocks, ...]). Then a head: LayerNorm (eps 1e-5, no affine) + ``out_layer`` (Gaussian, radiance field,
encoder), or two :class:`SparseSubdivideBlock3d` + ``out_layer`` (mesh, no final norm).

Call: ``out = model.apply({"params": p}, x)`` with ``x`` a :class:`SparseTensor` (coords in [0, resolution),
feats [cap, latent_channels]) -> a SparseTensor of the network output before the representation, feats
float32, 0 on padding: on x's rows for the Gaussian and radiance-field decoders, at the 4x subdivided
coords (capacity 64 cap, upstream's parent-major row order) for the mesh decoder.
``reps = model.apply({"params": p}, out, method="to_representation")`` -> one dict per sample.

Compute dtype (``dtype``; TRELLIS's ``use_fp16`` is float16): the blocks (and the mesh decoder's
subdivision convs) compute in ``dtype``; ``input_layer``, the APE, ``out_layer`` and the norms in float32.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mdt_jax.models import initializers
from mdt_jax.models.embeddings import absolute_position_embedding
from mdt_jax.models.norms import LayerNorm32
from mdt_jax.models.sparse_subdivide import SparseSubdivideBlock3d
from mdt_jax.models.swin import SwinBlock, window_order, window_packing
from mdt_jax.models.transformer import block_outputs, block_stack
from mdt_jax.representations import gaussians, mesh, radiance_field
from mdt_jax.sparse.tensor import SparseTensor

Dtype = Any
ATTN_MODES = ("swin", "full")


class SLatTrunk(nn.Module):
  """The fields every SLat VAE network takes (TRELLIS's constructor arguments) and the shared trunk.

  Subclasses call :meth:`trunk` from their ``__call__``; its params sit at the top level
  (``input_layer``, ``blocks``), as in TRELLIS's state dicts.
  """
  resolution: int
  model_channels: int
  latent_channels: int
  num_blocks: int
  num_heads: Optional[int] = None
  num_head_channels: int = 64
  mlp_ratio: float = 4
  attn_mode: str = "swin"
  window_size: int = 8
  pe_mode: str = "ape"
  use_fp16: bool = False
  use_checkpoint: bool = False
  qk_rms_norm: bool = False
  representation_config: Optional[Mapping[str, Any]] = None
  dtype: Dtype = jnp.float32

  def input_channels(self) -> int:
    """Feature width of the input voxels (the latent's, except for the encoder)."""
    return self.latent_channels

  @property
  def heads(self) -> int:
    return self.num_heads or self.model_channels // self.num_head_channels

  def example_inputs(self, batch_size: int = 1):
    """One voxel per sample at the origin (for ``init`` / ``eval_shape``)."""
    coords = np.zeros((batch_size, 4), np.int32)
    coords[:, 0] = np.arange(batch_size)
    return (SparseTensor.from_packed(coords, np.zeros((batch_size, self.input_channels()), np.float32)),)

  def _check(self, x):
    name = type(self).__name__
    if self.pe_mode != "ape":
      raise NotImplementedError(f"{name}: pe_mode={self.pe_mode!r} (only 'ape')")
    if self.attn_mode not in ATTN_MODES:
      raise NotImplementedError(f"{name}: attn_mode={self.attn_mode!r} (one of {ATTN_MODES})")
    if not isinstance(x, SparseTensor) or x.feats.ndim != 2 or x.feats.shape[1] != self.input_channels():
      raise ValueError(f"{name}: x must be a SparseTensor with feats [cap, {self.input_channels()}], got "
                       f"{type(x).__name__} {getattr(getattr(x, 'feats', None), 'shape', None)}")

  def _windows(self, x: SparseTensor):
    """Per block (order [num_blocks, cap], segment ids [num_blocks, cap]) and the static packing."""
    if self.attn_mode == "full":
      order = jnp.broadcast_to(jnp.arange(x.capacity, dtype=jnp.int32), (self.num_blocks, x.capacity))
      ids = jnp.where(x.mask, x.coords[:, 0], x.batch_size)
      return (order, jnp.broadcast_to(ids, order.shape)), None
    shifts = [(self.window_size // 2) * (i % 2) for i in range(min(self.num_blocks, 2))]
    pairs = [window_order(x.coords, x.mask, window_size=self.window_size, shift=s, resolution=self.resolution,
                          batch_size=x.batch_size) for s in shifts]
    pick = np.arange(self.num_blocks) % len(pairs)
    stacked = tuple(jnp.stack([p[i] for p in pairs])[pick] for i in range(2))
    return stacked, window_packing(self.resolution, self.window_size, x.batch_size)

  def trunk(self, x: SparseTensor) -> jax.Array:
    """x -> [cap, model_channels] block output in ``dtype`` (0 on padding)."""
    self._check(x)
    c = self.model_channels
    h = initializers.dense(c, "input_layer")(x.feats.astype(jnp.float32))
    h = (h + absolute_position_embedding(x.coords[:, 1:], c)).astype(self.dtype)
    windows, packing = self._windows(x)
    blocks = block_stack(self.num_blocks, remat=False, block=SwinBlock, in_axes=0)
    h, outputs = blocks(c, self.heads, self.mlp_ratio, packing=packing, qk_rms_norm=self.qk_rms_norm,
                        dtype=self.dtype, name="blocks")(h, windows)
    block_outputs(outputs)
    return jnp.where(x.mask[:, None], h, 0)

  def head(self, h: jax.Array, out_channels: int) -> jax.Array:
    """LayerNorm (eps 1e-5) + ``out_layer`` in float32 (zero-initialised as upstream)."""
    return initializers.dense(out_channels, "out_layer", kernel_init=initializers.ZERO)(
        LayerNorm32(1e-5)(h.astype(jnp.float32)))


def _per_sample(out: SparseTensor):
  """Host side: the output's rows of each sample, as (coords [n, 4], feats [n, C]) pairs."""
  coords, feats = out.to_packed()
  return [(jnp.asarray(coords[coords[:, 0] == b]), jnp.asarray(feats[coords[:, 0] == b]))
          for b in range(out.batch_size)]


class SLatGaussianDecoder(SLatTrunk):
  """Structured latent -> ``14 G`` Gaussian parameters per voxel (:mod:`mdt_jax.representations.gaussians`).

  With ``perturb_offset`` the params hold ``offset_perturbation`` [G, 3], a stored buffer used as stored
  (a fresh init computes it; the loader checks it against the Hammersley table).
  """

  @property
  def out_channels(self) -> int:
    return gaussians.channels(self.representation_config)

  @nn.compact
  def __call__(self, x: SparseTensor) -> SparseTensor:
    gaussians.check_config(self.representation_config, type(self).__name__)
    if self.representation_config["perturb_offset"]:
      self.param("offset_perturbation", lambda _: jnp.asarray(self._perturbation()))
    out = self.head(self.trunk(x), self.out_channels)
    return x.replace_feats(jnp.where(x.mask[:, None], out, 0))

  def _perturbation(self) -> np.ndarray:
    config = self.representation_config
    return gaussians.offset_perturbation(int(config["num_gaussians"]), float(config["voxel_size"]))

  def check_params(self, params, source: str):
    """The stored ``offset_perturbation`` must be the Hammersley table (to within float16 rounding)."""
    if "offset_perturbation" in params:
      stored, table = np.asarray(params["offset_perturbation"]), self._perturbation()
      if not np.allclose(stored, table, rtol=1e-3, atol=1e-3):
        raise ValueError(f"{source}: 'offset_perturbation' differs from atanh((2 hammersley - 1) / voxel_size) "
                         f"by up to {np.max(np.abs(stored - table)):.3g}")

  def to_representation(self, out: SparseTensor) -> list[dict[str, jax.Array]]:
    """-> per sample the activated Gaussians (``gaussians.activate``: xyz, scaling, rotation, opacity,
    features_dc, color) and TRELLIS's raw fields (``_xyz``, ``_features_dc``, ``_scaling``, ``_rotation``,
    ``_opacity``), Gaussian ``n G + g`` from the sample's n-th voxel."""
    config = self.representation_config
    pert = self.variables["params"].get("offset_perturbation") if config["perturb_offset"] else None
    reps = []
    for coords, feats in _per_sample(out):
      raw = gaussians.raw_fields(feats, coords, config, self.resolution, pert)
      reps.append({**gaussians.activate(raw, config), **raw})
    return reps


class SLatRadianceFieldDecoder(SLatTrunk):
  """Structured latent -> Strivec radiance-field parameters per voxel
  (:mod:`mdt_jax.representations.radiance_field`)."""

  @property
  def out_channels(self) -> int:
    return radiance_field.channels(self.representation_config)

  @nn.compact
  def __call__(self, x: SparseTensor) -> SparseTensor:
    radiance_field.check_config(self.representation_config, type(self).__name__)
    out = self.head(self.trunk(x), self.out_channels)
    return x.replace_feats(jnp.where(x.mask[:, None], out, 0))

  def to_representation(self, out: SparseTensor) -> list[dict[str, jax.Array]]:
    """-> per sample ``position``, ``trivec``, ``density``, ``features_dc``, ``depth``."""
    return [radiance_field.fields(f, c, self.representation_config, self.resolution) for c, f in _per_sample(out)]


class SLatMeshDecoder(SLatTrunk):
  """Structured latent -> the FlexiCubes input at 4x the resolution: trunk (no final norm), two
  :class:`SparseSubdivideBlock3d` (``upsample_0``: C -> C/4, ``upsample_1``: C/4 -> C/8), ``out_layer``.
  Output channels (:data:`mdt_jax.representations.mesh.LAYOUT`): sdf 8, deform 24, weights 21, and with
  ``use_color`` 48 colour channels (8 corners x 6)."""

  @property
  def use_color(self) -> bool:
    return bool((self.representation_config or {}).get("use_color", False))

  @property
  def out_channels(self) -> int:
    return mesh.channels(self.use_color)

  @nn.compact
  def __call__(self, x: SparseTensor) -> SparseTensor:
    c = self.model_channels
    h = x.replace_feats(self.trunk(x))
    h = SparseSubdivideBlock3d(self.resolution, c // 4, dtype=self.dtype, name="upsample_0")(h)
    h = SparseSubdivideBlock3d(2 * self.resolution, c // 8, dtype=self.dtype, name="upsample_1")(h)
    out = initializers.dense(self.out_channels, "out_layer", kernel_init=initializers.ZERO)(h.feats.astype(jnp.float32))
    return h.replace_feats(jnp.where(h.mask[:, None], out, 0))

  def to_representation(self, out: SparseTensor) -> list[dict[str, np.ndarray]]:
    """-> per sample a mesh (:func:`mdt_jax.representations.mesh.extract_mesh`: ``vertices``, ``faces``,
    ``vertex_attrs``, ``vertex_colors``) extracted from the decoded SDF by dual contouring."""
    return [mesh.extract_mesh(np.asarray(c), np.asarray(f), grid_resolution=4 * self.resolution,
                              use_color=self.use_color) for c, f in _per_sample(out)]


class SLatEncoder(SLatTrunk):
  """Features on voxels -> the structured latent's posterior: ``out_layer`` gives ``[mean, logvar]``
  (2 latent_channels). ``in_channels`` is the input feature width (1024: DINOv2 features)."""
  in_channels: int = 1024

  def input_channels(self) -> int:
    return self.in_channels

  @nn.compact
  def __call__(self, x: SparseTensor) -> SparseTensor:
    out = self.head(self.trunk(x), 2 * self.latent_channels)
    return x.replace_feats(jnp.where(x.mask[:, None], out, 0))


class ElasticSLatGaussianDecoder(SLatGaussianDecoder):
  """TRELLIS's memory-saving name for the same network and state dict."""


class ElasticSLatRadianceFieldDecoder(SLatRadianceFieldDecoder):
  """TRELLIS's memory-saving name for the same network and state dict."""


class ElasticSLatMeshDecoder(SLatMeshDecoder):
  """TRELLIS's memory-saving name for the same network and state dict."""


class ElasticSLatEncoder(SLatEncoder):
  """TRELLIS's memory-saving name for the same network and state dict."""


DECODERS = (SLatGaussianDecoder, SLatRadianceFieldDecoder, SLatMeshDecoder, SLatEncoder,
            ElasticSLatGaussianDecoder, ElasticSLatRadianceFieldDecoder, ElasticSLatMeshDecoder, ElasticSLatEncoder)
