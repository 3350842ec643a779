"""TRELLIS's two-stage generation: condition tokens -> sparse structure -> structured latents.

    pipe = TwoStagePipeline.from_checkpoints(ss_flow, ss_decoder, slat_flow, slat_mean=..., slat_std=...)
    out = pipe(cond, jax.random.key(0), ss=StageSampling(25, 7.5, (0.5, 1.0), 3.0),
               slat=StageSampling(25, 3.0, (0.5, 1.0), 3.0))

1. Stage 1: the SS flow samples a dense latent ``[B, R, R, R, C_ss]`` from noise (Euler, CFG with
   zero negative condition, as TRELLIS's image pipeline).
2. The SS decoder maps it to occupancy logits; occupied voxels (logit > 0) become the coordinates
   ``[N, 4]`` (b, x, y, z), sorted lexicographically (as ``argwhere`` on TRELLIS's NCDHW grid).
3. Stage 2: the SLat flow samples features on those voxels; they are un-normalised with the
   dataset's per-channel mean and std: ``feats = x0 * std + mean``.

The two stages are ``StructureStage`` and ``LatentStage``, which TRELLIS.2's pipeline
(``trellis2_pipeline.py``) shares. Noise depends only on the key and each sample's id (``sample_ids``),
not on how samples are batched: stage 1 draws ``[R, R, R, C]`` per sample, stage 2 draws a dense
``[R', R', R', C]`` field per sample and reads it at the sample's voxels.
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from conversion.trellis import load_model
from mdt_jax.flow import jit_sample
from mdt_jax.models import registry
from mdt_jax.sparse import SparseTensor


@dataclasses.dataclass(frozen=True)
class StageSampling:
  """Euler sampler settings of one stage (``mdt_jax.flow.sample``'s). ``cfg_strength`` is read in
  ``convention`` ("trellis": w, 0 is no guidance; "trellis2": g, 1 is no guidance and 0 the
  unconditional branch); ``guidance_rescale`` is TRELLIS.2's CFG-rescale rho (0: off)."""
  steps: int
  cfg_strength: float = 0.0
  cfg_interval: tuple[float, float] = (0.0, 1.0)
  rescale_t: float = 1.0
  convention: str = "trellis"
  guidance_rescale: float = 0.0

  def kwargs(self) -> dict:
    return dict(steps=int(self.steps), cfg_strength=float(self.cfg_strength),
                cfg_interval=tuple(float(v) for v in self.cfg_interval), rescale_t=float(self.rescale_t),
                convention=str(self.convention), guidance_rescale=float(self.guidance_rescale))


@dataclasses.dataclass(frozen=True)
class Generation:
  """What a pipeline call produced (host arrays).

  ss_latent [B, R, R, R, C_ss] float32: the stage-1 sample. occupancy [B, R', R', R'] bool: decoder
  logits > 0. coords [N, 4] int32 (b, x, y, z), grouped by sample, lexicographic. feats [N, C_slat]
  float32: un-normalised structured latents, row i at ``coords[i]``. timings: seconds per stage
  (``ss_flow``, ``ss_decoder``, ``slat_noise``, ``slat_flow``; a first call of a shape includes compilation).
  """
  ss_latent: np.ndarray
  occupancy: np.ndarray
  coords: np.ndarray
  feats: np.ndarray
  timings: dict[str, float]

  def sample(self, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Sample b's ``(coords [n, 3] int32 (x, y, z), feats [n, C])``."""
    rows = self.coords[:, 0] == b
    return self.coords[rows, 1:], self.feats[rows]


def _keys(key, stage: int, sample_ids):
  """One key per sample: ``fold_in(fold_in(key, stage), sample_id)``."""
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.fold_in(key, stage), sample_ids)


def _timed(timings: dict, name: str, fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  timings[name] = time.perf_counter() - start
  return out


def pool_occupancy(occupancy: jax.Array, ratio: int) -> jax.Array:
  """[B, R', R', R'] bool -> [B, R'/ratio, ...] bool: a voxel is occupied when any of its ratio^3
  children is (a max-pool of the 0/1 grid with kernel = stride = ratio)."""
  if ratio == 1:
    return occupancy
  b, r = occupancy.shape[0], occupancy.shape[1] // ratio
  return occupancy.reshape(b, r, ratio, r, ratio, r, ratio).any(axis=(2, 4, 6))


class StructureStage:
  """The sparse structure, shared by TRELLIS and TRELLIS.2: the SS flow samples a dense latent
  ``[B, R, R, R, C_ss]`` from noise, the SS decoder's occupancy logits > 0 at ``decoder_resolution``
  R' = R 2^(len(channels) - 1) are pooled to ``resolution`` (R' by default; a divisor of R').

  Noise: stream 0 of the key (``[R, R, R, C]`` per sample id). Compiled once per settings and shape.
  """

  def __init__(self, flow, decoder, resolution: int | None = None):
    self.flow, self.decoder = flow, decoder
    self.decoder_resolution = flow.resolution * 2 ** (len(decoder.channels) - 1)
    self.resolution = resolution or self.decoder_resolution
    if self.decoder_resolution % self.resolution:
      raise ValueError(f"structure resolution {self.resolution} must divide the SS decoder's output resolution "
                       f"{self.decoder_resolution}")
    ratio = self.decoder_resolution // self.resolution
    self._sample = jit_sample(registry.velocity(flow))
    self._occupancy = jax.jit(lambda p, z: pool_occupancy(decoder.apply({"params": p}, z)[..., 0] > 0, ratio))
    shape = (flow.resolution,) * 3 + (flow.in_channels,)
    self._noise = jax.jit(lambda key, ids: jax.vmap(lambda k: jax.random.normal(k, shape))(_keys(key, 0, ids)))

  def noise(self, key, sample_ids) -> jax.Array:
    """Noise [B, R, R, R, C_ss] of the samples named ``sample_ids`` [B]."""
    return self._noise(key, jnp.asarray(sample_ids, jnp.int32))

  def __call__(self, flow_params, decoder_params, cond, key, settings: StageSampling, *, sample_ids, timings):
    """-> (latent [B, R, R, R, C_ss] float32, occupancy [B, r, r, r] bool at ``resolution``), host arrays;
    seconds of ``ss_flow`` and ``ss_decoder`` into ``timings``."""
    noise = self.noise(key, sample_ids)
    z, _ = _timed(timings, "ss_flow", lambda: self._sample(flow_params, noise, cond, **settings.kwargs()))
    occupancy = _timed(timings, "ss_decoder", self._occupancy, decoder_params, z)
    return np.asarray(z), np.asarray(occupancy)


class LatentStage:
  """A sparse flow sampling features on given voxels (TRELLIS's SLat flow; TRELLIS.2's shape and
  texture flows). Noise: stream ``stream`` of the key, a dense ``[R, R, R, C]`` field per sample id
  (R = ``resolution``, the voxels' grid) read at the sample's voxels, so a voxel's noise does not
  depend on the batch. Compiled once per settings and capacity bucket."""

  def __init__(self, flow, resolution: int, stream: int, name: str):
    self.flow, self.resolution, self.stream, self.name = flow, resolution, stream, name
    # TRELLIS's U-Net down-samples once per io stage; TRELLIS.2's sparse DiT has none.
    self.coarse_levels = len(getattr(flow, "stages", ()))
    self._sample = jit_sample(registry.velocity(flow))
    self._noise = jax.jit(lambda key, ids, coords: self._voxel_noise(_keys(key, stream, ids), coords))

  def _voxel_noise(self, keys, coords):
    """keys [B]; coords [cap, 4] (padding rows read sample 0's field; callers mask them) -> [cap, C]."""
    r, c = self.resolution, self.noise_channels
    fields = jax.vmap(lambda k: jax.random.normal(k, (r, r, r, c)))(keys)
    return fields[coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]]

  @property
  def noise_channels(self) -> int:
    """Channels sampled: the flow's output (its input less any ``concat_cond`` channels)."""
    return self.flow.out_channels

  def noise(self, key, coords, sample_ids) -> jax.Array:
    """Noise [cap, C] at ``coords`` [cap, 4] (b indexes ``sample_ids`` [B])."""
    return self._noise(key, jnp.asarray(sample_ids, jnp.int32), jnp.asarray(coords, jnp.int32))

  def __call__(self, params, coords, cond, key, settings: StageSampling, *, sample_ids, timings,
               concat_cond: SparseTensor | None = None) -> SparseTensor:
    """``coords`` [N, 4] (b, x, y, z; grouped by sample, N > 0), cond [B, L, C] -> x0, a SparseTensor on
    those rows (the flow's normalised latent); seconds of ``<name>_noise`` and ``<name>_flow`` into
    ``timings``. ``concat_cond``: a SparseTensor on the same rows (TRELLIS.2's texture flow)."""
    start = time.perf_counter()
    x = SparseTensor.from_packed(coords, np.zeros((len(coords), self.noise_channels), np.float32),
                                 batch_size=cond.shape[0], coarse_levels=self.coarse_levels)
    x = x.replace_feats(self.noise(key, x.coords, sample_ids) * x.mask[:, None])
    timings[f"{self.name}_noise"] = time.perf_counter() - start
    x0, _ = _timed(timings, f"{self.name}_flow",
                   lambda: self._sample(params, x, cond, concat_cond=concat_cond, **settings.kwargs()))
    return x0


def check_cond(cond, channels: int, caller: str) -> jax.Array:
  """cond -> float32 [B, L, ``channels``], or a ValueError naming ``caller`` and the shape."""
  cond = jnp.asarray(cond, jnp.float32)
  if cond.ndim != 3 or cond.shape[-1] != channels:
    raise ValueError(f"{caller}: cond must be [B, L, {channels}], got {cond.shape}")
  return cond


class TwoStagePipeline:
  """The models and their compiled functions; call it with condition tokens (see the module doc).

  Params are traced arguments of the jitted samplers (compiled once per step count, settings and
  shape; stage 2 once per capacity bucket of the voxel count).
  """

  def __init__(self, ss_flow, ss_flow_params, ss_decoder, ss_decoder_params, slat_flow, slat_flow_params, *,
               slat_mean, slat_std):
    self.ss_flow, self.ss_decoder, self.slat_flow = ss_flow, ss_decoder, slat_flow
    self.params = {"ss_flow": ss_flow_params, "ss_decoder": ss_decoder_params, "slat_flow": slat_flow_params}
    self.slat_mean = np.asarray(slat_mean, np.float32)
    self.slat_std = np.asarray(slat_std, np.float32)
    self.resolution = ss_flow.resolution * 2 ** (len(ss_decoder.channels) - 1)
    problems = []
    if ss_flow.out_channels != ss_decoder.latent_channels:
      problems.append(f"SS flow out_channels {ss_flow.out_channels} != decoder latent_channels "
                      f"{ss_decoder.latent_channels}")
    if self.resolution != slat_flow.resolution:
      problems.append(f"decoder output resolution {self.resolution} != SLat flow resolution {slat_flow.resolution}")
    if ss_flow.cond_channels != slat_flow.cond_channels:
      problems.append(f"cond_channels differ: SS flow {ss_flow.cond_channels}, SLat flow {slat_flow.cond_channels}")
    if self.slat_mean.shape != (slat_flow.out_channels,) or self.slat_std.shape != (slat_flow.out_channels,):
      problems.append(f"slat mean/std must be [{slat_flow.out_channels}], got {self.slat_mean.shape}, "
                      f"{self.slat_std.shape}")
    if problems:
      raise ValueError("TwoStagePipeline: models do not fit together: " + "; ".join(problems))
    self.structure_stage = StructureStage(ss_flow, ss_decoder)
    self.latent_stage = LatentStage(slat_flow, self.resolution, stream=1, name="slat")

  @classmethod
  def from_checkpoints(cls, ss_flow, ss_decoder, slat_flow, *, slat_mean, slat_std, dtype=None):
    """Paths (TRELLIS stems or orbax directories) -> pipeline; ``dtype`` the models' compute dtype."""
    models = [load_model(p, dtype=dtype) for p in (ss_flow, ss_decoder, slat_flow)]
    return cls(*models[0], *models[1], *models[2], slat_mean=slat_mean, slat_std=slat_std)

  def structure_noise(self, key, sample_ids) -> jax.Array:
    """Stage-1 noise [B, R, R, R, C_ss] of the samples named ``sample_ids`` [B]."""
    return self.structure_stage.noise(key, sample_ids)

  def latent_noise(self, key, coords, sample_ids) -> jax.Array:
    """Stage-2 noise [cap, C_slat] at ``coords`` [cap, 4] (b indexes ``sample_ids`` [B])."""
    return self.latent_stage.noise(key, coords, sample_ids)

  def structure(self, cond, key, ss: StageSampling, *, sample_ids=None, timings=None):
    """Stage 1 + decoder: -> (latent [B, R, R, R, C_ss] float32, occupancy [B, R', R', R'] bool), host arrays."""
    cond = check_cond(cond, self.ss_flow.cond_channels, "TwoStagePipeline")
    return self.structure_stage(self.params["ss_flow"], self.params["ss_decoder"], cond, key, ss,
                                sample_ids=np.arange(cond.shape[0]) if sample_ids is None else sample_ids,
                                timings={} if timings is None else timings)

  def latents(self, coords, cond, key, slat: StageSampling, *, sample_ids=None, timings=None,
              unnormalise: bool = True) -> np.ndarray:
    """Stage 2 on ``coords`` [N, 4] (b, x, y, z; grouped by sample) -> feats [N, C_slat] float32,
    un-normalised unless asked otherwise."""
    cond = check_cond(cond, self.ss_flow.cond_channels, "TwoStagePipeline")
    if not len(coords):
      return np.zeros((0, self.slat_flow.out_channels), np.float32)
    x0 = self.latent_stage(self.params["slat_flow"], coords, cond, key, slat,
                           sample_ids=np.arange(cond.shape[0]) if sample_ids is None else sample_ids,
                           timings={} if timings is None else timings)
    feats = x0.to_packed()[1]
    return feats * self.slat_std + self.slat_mean if unnormalise else feats

  def __call__(self, cond, key: jax.Array, *, ss: StageSampling, slat: StageSampling,
               sample_ids=None) -> Generation:
    """cond [B, L, cond_channels] condition tokens (negative condition: zeros); key: a PRNG key;
    sample_ids [B] ints naming each sample's noise (default 0..B-1)."""
    timings = {}
    z, occupancy = self.structure(cond, key, ss, sample_ids=sample_ids, timings=timings)
    coords = np.argwhere(occupancy).astype(np.int32)
    feats = self.latents(coords, cond, key, slat, sample_ids=sample_ids, timings=timings)
    return Generation(ss_latent=z, occupancy=occupancy, coords=coords, feats=feats, timings=timings)
