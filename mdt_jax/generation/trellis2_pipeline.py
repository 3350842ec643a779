"""TRELLIS.2's latent generation, the ``512`` and ``1024`` pipeline types: condition tokens -> sparse
structure -> shape latent -> texture latent.

    pipe = Trellis2Pipeline.from_checkpoints(ss_flow, ss_decoder, shape_flow, tex_flow, resolution=32)
    out = pipe(cond, jax.random.key(0), ss=StageSampling(12, 7.5, (0.6, 1.0), 5.0, "trellis2", 0.7),
               shape=StageSampling(12, 7.5, (0.6, 1.0), 3.0, "trellis2", 0.5),
               tex=StageSampling(12, 1.0, (0.6, 1.0), 3.0, "trellis2"))

1. The sparse structure (``pipeline.StructureStage``, TRELLIS's maths): the SS flow samples a dense
   latent ``[B, 16, 16, 16, 8]`` (full size) with TRELLIS.2's guidance (``g v_c + (1 - g) v_u``, zeros
   as the negative condition, CFG-rescale; fixtures README section 3); TRELLIS's SS decoder gives
   occupancy logits at 64^3; logits > 0, max-pooled to ``resolution`` (32 for the ``512`` type, 64
   for ``1024``); the coordinates are ``argwhere`` of that grid (grouped by sample, lexicographic).
2. The shape flow samples the normalised shape latent on those voxels.
3. The texture flow samples the normalised texture latent on the same voxels with the shape latent
   as ``concat_cond``: upstream passes the *normalised* shape latent (README section 2.7), which is
   what step 2 sampled, so no statistics are needed to chain the stages.
4. With statistics given, each latent is un-normalised, ``feats * std + mean`` (what the upstream
   decoders take); without, the latents are returned as sampled (``normalised=True``).

The structure is conditioned on ``cond`` (DINOv3 tokens at 512 x 512), the two latents on
``cond_slat`` (the same tokens for ``512``; tokens at 1024 x 1024 for ``1024``). Noise depends only on
the key and each sample's id: streams 0 (structure), 1 (shape) and 2 (texture) of the key, the
latents' noise read from a dense field at ``resolution`` at the sample's voxels (``LatentStage``).
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from conversion.trellis import load_model
from mdt_jax.generation.pipeline import LatentStage, StageSampling, StructureStage, check_cond


@dataclasses.dataclass(frozen=True)
class Trellis2Generation:
  """What a TRELLIS.2 pipeline call produced (host arrays).

  ss_latent [B, R, R, R, C_ss] float32; occupancy [B, r, r, r] bool at the pipeline's resolution;
  coords [N, 4] int32 (b, x, y, z), grouped by sample, lexicographic; shape [N, C_shape] and
  texture [N, C_tex] float32, row i at ``coords[i]``, un-normalised unless ``normalised``;
  timings: seconds per stage (``ss_flow``, ``ss_decoder``, ``shape_noise``, ``shape_flow``,
  ``tex_noise``, ``tex_flow``; a first call of a shape includes compilation).
  """
  ss_latent: np.ndarray
  occupancy: np.ndarray
  coords: np.ndarray
  shape: np.ndarray
  texture: np.ndarray
  normalised: bool
  timings: dict[str, float]

  def sample(self, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample b's ``(coords [n, 3] int32 (x, y, z), shape [n, C_shape], texture [n, C_tex])``."""
    rows = self.coords[:, 0] == b
    return self.coords[rows, 1:], self.shape[rows], self.texture[rows]


def _statistics(name: str, stats, channels: int, problems: list[str]):
  """(mean, std) of ``channels`` values each, or None -> float32 arrays or None; a problem otherwise."""
  if stats is None:
    return None
  mean, std = (np.asarray(v, np.float32) for v in stats)
  if mean.shape != (channels,) or std.shape != (channels,):
    problems.append(f"{name} mean/std must be [{channels}], got {mean.shape}, {std.shape}")
  return mean, std


class Trellis2Pipeline:
  """TRELLIS.2's models and their compiled functions; call it with condition tokens (module doc).

  Params are traced arguments of the jitted samplers (compiled once per step count, settings and
  shape; the latent stages once per capacity bucket of the voxel count).
  """

  def __init__(self, models: dict, *, resolution: int, shape_normalization=None, tex_normalization=None):
    """models: ``{"ss_flow", "ss_decoder", "shape_flow", "tex_flow"}`` -> (module, params);
    resolution: the voxels' grid (32: ``512``, 64: ``1024``), dividing the SS decoder's output;
    ``*_normalization``: (mean [C], std [C]) of each latent, or None to keep them normalised."""
    missing = {"ss_flow", "ss_decoder", "shape_flow", "tex_flow"} - set(models)
    if missing:
      raise ValueError(f"Trellis2Pipeline: models missing {sorted(missing)}")
    self.params = {name: params for name, (_, params) in models.items()}
    ss_flow, decoder, shape_flow, tex_flow = (models[n][0] for n in ("ss_flow", "ss_decoder", "shape_flow", "tex_flow"))
    self.ss_flow, self.ss_decoder, self.shape_flow, self.tex_flow = ss_flow, decoder, shape_flow, tex_flow
    problems = []
    if ss_flow.out_channels != decoder.latent_channels:
      problems.append(f"SS flow out_channels {ss_flow.out_channels} != decoder latent_channels "
                      f"{decoder.latent_channels}")
    if shape_flow.cond_channels != tex_flow.cond_channels:
      problems.append(f"cond_channels differ: shape flow {shape_flow.cond_channels}, texture flow "
                      f"{tex_flow.cond_channels}")
    if tex_flow.in_channels != tex_flow.out_channels + shape_flow.out_channels:
      problems.append(f"texture flow in_channels {tex_flow.in_channels} != its out_channels {tex_flow.out_channels} "
                      f"+ the shape latent's {shape_flow.out_channels} (concat_cond)")
    self.shape_normalization = _statistics("shape", shape_normalization, shape_flow.out_channels, problems)
    self.tex_normalization = _statistics("texture", tex_normalization, tex_flow.out_channels, problems)
    if (self.shape_normalization is None) != (self.tex_normalization is None):
      problems.append("give the statistics of both latents or of neither")
    try:
      self.structure_stage = StructureStage(ss_flow, decoder, resolution)
    except ValueError as e:
      problems.append(str(e))
    if problems:
      raise ValueError("Trellis2Pipeline: models do not fit together: " + "; ".join(problems))
    self.resolution = resolution
    self.shape_stage = LatentStage(shape_flow, resolution, stream=1, name="shape")
    self.tex_stage = LatentStage(tex_flow, resolution, stream=2, name="tex")

  @classmethod
  def from_checkpoints(cls, ss_flow, ss_decoder, shape_flow, tex_flow, *, resolution: int, shape_normalization=None,
                       tex_normalization=None, dtype=None):
    """Paths (TRELLIS / TRELLIS.2 stems or orbax directories) -> pipeline; ``dtype`` overrides the
    models' compute dtype (None: each config's own)."""
    paths = {"ss_flow": ss_flow, "ss_decoder": ss_decoder, "shape_flow": shape_flow, "tex_flow": tex_flow}
    return cls({name: load_model(path, dtype=dtype) for name, path in paths.items()}, resolution=resolution,
               shape_normalization=shape_normalization, tex_normalization=tex_normalization)

  def __call__(self, cond, key: jax.Array, *, ss: StageSampling, shape: StageSampling, tex: StageSampling,
               cond_slat=None, sample_ids=None) -> Trellis2Generation:
    """cond [B, L, C] condition tokens of the structure (negative condition: zeros); cond_slat
    [B, L', C] those of the two latents (default: ``cond``); key: a PRNG key; sample_ids [B] ints
    naming each sample's noise (default 0..B-1)."""
    cond = check_cond(cond, self.ss_flow.cond_channels, "Trellis2Pipeline (structure)")
    cond_slat = check_cond(cond if cond_slat is None else cond_slat, self.shape_flow.cond_channels,
                           "Trellis2Pipeline (shape and texture, cond_slat)")
    if cond_slat.shape[0] != cond.shape[0]:
      raise ValueError(f"Trellis2Pipeline: cond has {cond.shape[0]} samples, cond_slat {cond_slat.shape[0]}")
    sample_ids = np.arange(cond.shape[0]) if sample_ids is None else np.asarray(sample_ids)
    timings = {}
    z, occupancy = self.structure_stage(self.params["ss_flow"], self.params["ss_decoder"], cond, key, ss,
                                        sample_ids=sample_ids, timings=timings)
    coords = np.argwhere(occupancy).astype(np.int32)
    if len(coords):
      shape_x0 = self.shape_stage(self.params["shape_flow"], coords, cond_slat, key, shape, sample_ids=sample_ids,
                                  timings=timings)
      tex_x0 = self.tex_stage(self.params["tex_flow"], coords, cond_slat, key, tex, sample_ids=sample_ids,
                              timings=timings, concat_cond=shape_x0)
      shape_feats, tex_feats = shape_x0.to_packed()[1], tex_x0.to_packed()[1]
    else:
      shape_feats = np.zeros((0, self.shape_flow.out_channels), np.float32)
      tex_feats = np.zeros((0, self.tex_flow.out_channels), np.float32)
    normalised = self.shape_normalization is None
    if not normalised:
      shape_feats = shape_feats * self.shape_normalization[1] + self.shape_normalization[0]
      tex_feats = tex_feats * self.tex_normalization[1] + self.tex_normalization[0]
    return Trellis2Generation(ss_latent=z, occupancy=occupancy, coords=coords, shape=shape_feats, texture=tex_feats,
                              normalised=normalised, timings=timings)
