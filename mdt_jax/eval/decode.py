"""Generated stage-1 latents -> occupancy grids -> voxel coordinates (and back), host side.

The toy's stage-1 decoder is the inverse fold of the latent followed by `> 0`
(fold.latent_to_occupancy), as TRELLIS's sparse-structure decoder keeps the voxels whose logit is
> 0; a value of exactly 0 is empty. Stage 2 then runs on the occupied voxels in TRELLIS's packed
layout: coords int32 [N, 4] (sample index, x, y, z), grouped by sample, lexicographic.
"""
import numpy as np

from mdt_jax.data.fold import latent_to_occupancy


def decode_latents(latents):
  """Stage-1 latents float [B, S, S, S, 8] (numpy or jax) -> occupancy bool [B, 2S, 2S, 2S].

  Raises ValueError on a wrong shape or on non-finite values (a diverged sampler would otherwise
  read as empty shapes).
  """
  latents = np.asarray(latents)
  if latents.ndim != 5 or latents.shape[-1] != 8 or len(set(latents.shape[1:4])) != 1:
    raise ValueError(f"stage-1 latents must be [B, S, S, S, 8], got shape {latents.shape}")
  bad = int(np.size(latents) - np.count_nonzero(np.isfinite(latents)))
  if bad:
    raise ValueError(f"stage-1 latents hold {bad} non-finite values")
  return latent_to_occupancy(latents)


def occupancy_to_coords(occupancy):
  """Occupancy bool [B, R, R, R] -> coords int32 [N, 4] (b, x, y, z), grouped by b, lexicographic."""
  occupancy = np.asarray(occupancy, bool)
  if occupancy.ndim != 4 or len(set(occupancy.shape[1:])) != 1:
    raise ValueError(f"occupancy must be [B, R, R, R], got shape {occupancy.shape}")
  return np.argwhere(occupancy).astype(np.int32)


def coords_to_occupancy(coords, batch_size, resolution):
  """Coords int [N, 4] (b, x, y, z), any order, repeats allowed -> occupancy bool [B, R, R, R]."""
  coords = np.asarray(coords)
  if coords.ndim != 2 or coords.shape[1] != 4:
    raise ValueError(f"coords must be [N, 4] (b, x, y, z), got shape {coords.shape}")
  bound = np.array([batch_size, resolution, resolution, resolution])
  if np.any((coords < 0) | (coords >= bound)):
    raise ValueError(f"coords outside [0, {batch_size}) x [0, {resolution})^3")
  occupancy = np.zeros((batch_size, resolution, resolution, resolution), bool)
  occupancy[tuple(coords.T)] = True
  return occupancy
