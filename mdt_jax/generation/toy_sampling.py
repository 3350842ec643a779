"""Sampling both toy stages with fixed noises, in batches and one shape at a time (timed).

A sampler's settings (`method` below) are any object with `steps` and `cfg_strength`: a
`StageSampling`, or the demo's `Method`.

Noise depends only on (seed, stage, sample id), never on the method or the batching, so every
method sees the same noises: stage 1 draws `[S, S, S, 8]` from `fold_in(fold_in(key(seed), 0), id)`;
stage 2 draws a dense `[R, R, R, 8]` field from `fold_in(fold_in(key(seed), 1), id)` and reads it at
the shape's voxels (as generation.TwoStagePipeline does), so a voxel's noise does not depend on
which other voxels the shape has.

Stage 2 runs in chunks of one fixed layout (`ChunkLayout`: batch size, voxel capacity, 2x-parent
capacity), so the whole evaluation compiles one program per step count and guidance; a shape too
large for it is sampled alone in a layout of its own. The samplers are `flow.jit_sample` functions
taking the params as arguments (docs/design.md, Samplers).
"""
from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from mdt_jax import flow
from mdt_jax.data import toy_condition, toy_shapes
from mdt_jax.data.fold import latent_to_occupancy
from mdt_jax.generation.pipeline import StageSampling
from mdt_jax.models import registry
from mdt_jax.sparse import SparseTensor, bucket_capacity


@dataclasses.dataclass(frozen=True)
class ChunkLayout:
  """A stage-2 batch layout: `shapes` samples, `voxels` rows, `parents` rows at each coarse level."""
  shapes: int
  voxels: int
  parents: int


def packed_coords(shapes: list[np.ndarray]) -> np.ndarray:
  """Per-shape voxels [n_i, 3] -> TRELLIS's packed coords int32 [sum n_i, 4] (b, x, y, z)."""
  return np.concatenate([np.concatenate([np.full((len(c), 1), b), c], 1) for b, c in enumerate(shapes)]
                        ).astype(np.int32)


def parent_count(coords: np.ndarray) -> int:
  """Distinct 2x parents of one shape's voxels `[n, 3]` (the SLat model's first coarse level)."""
  return len(np.unique(np.asarray(coords) >> 1, axis=0))


def pack(shapes: list[np.ndarray], layout: ChunkLayout) -> list[tuple[list[int], ChunkLayout]]:
  """Shape voxel lists `[n_i, 3]` -> chunks `(indices, layout)` in order: greedily `layout`-sized;
  a shape that alone exceeds it gets a chunk of its own (one shape, bucketed capacities)."""
  chunks, current, voxels, parents = [], [], 0, 0
  for i, coords in enumerate(shapes):
    n, p = len(coords), parent_count(coords)
    if n > layout.voxels or p > layout.parents:
      chunks.append(([i], ChunkLayout(1, bucket_capacity(max(n, 1)), bucket_capacity(max(p, 1)))))
      continue
    if current and (len(current) == layout.shapes or voxels + n > layout.voxels or parents + p > layout.parents):
      chunks.append((current, layout))
      current, voxels, parents = [], 0, 0
    current.append(i)
    voxels, parents = voxels + n, parents + p
  if current:
    chunks.append((current, layout))
  return chunks


class ToySamplers:
  """Jitted samplers of the stage-1 and stage-2 models (params are arguments) and the fixed noises."""

  def __init__(self, ss_model, slat_model, *, seed: int):
    self.ss_model, self.slat_model = ss_model, slat_model
    self.coarse_levels = len(slat_model.stages)
    self.resolution = slat_model.resolution
    self.key = jax.random.key(seed)
    self._ss = flow.jit_sample(registry.velocity(ss_model))
    self._slat = flow.jit_sample(registry.velocity(slat_model))
    latent = (ss_model.resolution,) * 3 + (ss_model.in_channels,)
    field = (self.resolution,) * 3 + (slat_model.in_channels,)
    keys = lambda key, stage, ids: jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(key, stage), ids)
    self._ss_noise = jax.jit(lambda key, ids: jax.vmap(lambda k: jax.random.normal(k, latent))(keys(key, 0, ids)))

    def voxel_noise(key, ids, coords):  # ids [B]; coords [cap, 4] -> [cap, C]
      fields = jax.vmap(lambda k: jax.random.normal(k, field))(keys(key, 1, ids))
      return fields[coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]]
    self._voxel_noise = jax.jit(voxel_noise)

  def structure_noise(self, sample_ids, seed_offset: int = 0) -> jax.Array:
    """Stage-1 noise `[B, S, S, S, C]` of the samples `sample_ids` [B]."""
    return self._ss_noise(jax.random.fold_in(self.key, seed_offset), jnp.asarray(sample_ids, jnp.int32))

  def structures(self, params, cond, method, sample_ids, seed_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stage 1 for `cond` [B, L, C] -> (latents [B, S, S, S, C] float32, occupancy [B, R, R, R] bool)."""
    noise = self.structure_noise(sample_ids, seed_offset)
    z, _ = self._ss(params, noise, jnp.asarray(cond), steps=method.steps, cfg_strength=method.cfg_strength)
    z = np.asarray(z)
    return z, latent_to_occupancy(z)

  def _tensor(self, shapes, cond, ids, layout: ChunkLayout):
    """One chunk: shapes (voxels [n_i, 3]), cond [k, L, C], ids [k] -> (noisy SparseTensor, cond [B, L, C])."""
    coords = packed_coords(shapes)
    x = SparseTensor.from_packed(coords, np.zeros((len(coords), self.slat_model.in_channels), np.float32),
                                 capacity=layout.voxels, batch_size=layout.shapes)
    x = x.replace(coarse_capacities=(layout.parents,) * self.coarse_levels)
    padded_ids = np.zeros(layout.shapes, np.int32)
    padded_ids[:len(ids)] = ids
    noise = self._voxel_noise(self.key, jnp.asarray(padded_ids), x.coords)
    padded_cond = np.zeros((layout.shapes, *cond.shape[1:]), np.float32)
    padded_cond[:len(cond)] = cond
    return x.replace_feats(noise * x.mask[:, None]), jnp.asarray(padded_cond)

  def latents(self, params, shapes: list[np.ndarray], cond, method, sample_ids, layout: ChunkLayout
              ) -> list[np.ndarray]:
    """Stage 2 on each shape's voxels `[n_i, 3]` -> its feats `[n_i, C]` (rows in the shape's order)."""
    cond, sample_ids = np.asarray(cond, np.float32), np.asarray(sample_ids)
    out = [None] * len(shapes)
    for indices, chunk_layout in pack(shapes, layout):
      chunk = [shapes[i] for i in indices]
      x, chunk_cond = self._tensor(chunk, cond[indices], sample_ids[indices], chunk_layout)
      x0, _ = self._slat(params, x, chunk_cond, steps=method.steps, cfg_strength=method.cfg_strength)
      feats = np.asarray(x0.feats)
      start = 0
      for i, c in zip(indices, chunk):
        out[i] = feats[start:start + len(c)]
        start += len(c)
    return out

  def single_latents(self, params, coords: np.ndarray, cond, method, sample_id: int) -> np.ndarray:
    """Stage 2 of one shape in its own bucketed layout (what a user sampling one shape runs)."""
    layout = ChunkLayout(1, bucket_capacity(max(len(coords), 1)), bucket_capacity(max(parent_count(coords), 1)))
    return self.latents(params, [coords], np.asarray(cond)[None], method, [sample_id], layout)[0]

  def pipeline_one(self, params_ss, params_slat, cond, method, sample_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Both stages for one condition `cond` [L, C] -> (voxels [n, 3], feats [n, C])."""
    _, occupancy = self.structures(params_ss, np.asarray(cond)[None], method, [sample_id])
    coords = np.argwhere(occupancy[0]).astype(np.int32)
    return coords, self.single_latents(params_slat, coords, cond, method, sample_id)


def median_seconds(fn, repeats: int):
  """One warm-up call (compiles), then the median wall time of `repeats` calls; `fn` returns host arrays.
  -> (median seconds, the warm-up call's output)."""
  first = fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times)), first


SMOKE_CONDITIONS = (1, 13)   # two families (sphere and torus, middle size)
SMOKE_STEPS = 2


def smoke_samples(ss_model, ss_params, slat_model, slat_params, *, cfg_strength: float) -> dict:
  """A short fixed sampling run of a pair of teachers, whose output is stored beside shipped teachers
  (teachers/smoke.json) and recomputed by the tests: stage 1 for SMOKE_CONDITIONS, then stage 2 on the
  first stage-2 evaluation structure of each, SMOKE_STEPS Euler steps at guidance `cfg_strength`.

  Returns {"ss": latents float32 [2, S, S, S, 8] flattened to a list, "slat": feats [n, 8] of both
  shapes concatenated, as a list}, and the settings.
  """
  samplers = ToySamplers(ss_model, slat_model, seed=0)
  method = StageSampling(SMOKE_STEPS, cfg_strength)
  cond = toy_condition.condition_tokens(np.asarray(SMOKE_CONDITIONS))
  latents, _ = samplers.structures(ss_params, cond, method, np.arange(len(SMOKE_CONDITIONS)))
  params = toy_shapes.sample_shapes(np.random.default_rng(0), *toy_condition.split_condition(np.asarray(SMOKE_CONDITIONS)))
  shapes = [np.argwhere(o).astype(np.int32) for o in toy_shapes.voxelize(params, slat_model.resolution)]
  layout = ChunkLayout(len(shapes), bucket_capacity(sum(map(len, shapes))),
                       bucket_capacity(sum(parent_count(s) for s in shapes)))
  feats = samplers.latents(slat_params, shapes, cond, method, np.arange(len(shapes)), layout)
  return {"conditions": list(SMOKE_CONDITIONS), "steps": SMOKE_STEPS, "cfg_strength": cfg_strength,
          "ss": latents.ravel().tolist(), "slat": np.concatenate(feats).ravel().tolist()}
