"""Occupancy grids <-> stage-1 latents: space-to-depth by 2, channels-last.

An occupancy grid `bool [..., R, R, R]` (axes x, y, z) becomes the latent
`float32 [..., R/2, R/2, R/2, 8]` with values in {-1, 1}: voxel (2i + a, 2j + b, 2k + c) goes to
cell (i, j, k), channel 4a + 2b + c. The fold is a pure permutation, so `unfold` is its exact
inverse on any values; `latent_to_occupancy` (unfold, then > 0) is the toy's decoder.
"""
import numpy as np


def fold(grid):
  """`[..., R, R, R]` -> `[..., R/2, R/2, R/2, 8]`, channel 4a + 2b + c for offset (a, b, c)."""
  grid = np.asarray(grid)
  *lead, r, r2, r3 = grid.shape
  if not r == r2 == r3 or r % 2:
    raise ValueError(f"fold needs a cubic grid of even side, got shape {grid.shape}")
  s = r // 2
  x = grid.reshape(*lead, s, 2, s, 2, s, 2)
  n = len(lead)
  x = x.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3, n + 5)
  return x.reshape(*lead, s, s, s, 8)


def unfold(latent):
  """`[..., S, S, S, 8]` -> `[..., 2S, 2S, 2S]`; the exact inverse of `fold`."""
  latent = np.asarray(latent)
  *lead, s, s2, s3, c = latent.shape
  if not s == s2 == s3 or c != 8:
    raise ValueError(f"unfold needs [..., S, S, S, 8], got shape {latent.shape}")
  n = len(lead)
  x = latent.reshape(*lead, s, s, s, 2, 2, 2)
  x = x.transpose(*range(n), n, n + 3, n + 1, n + 4, n + 2, n + 5)
  return x.reshape(*lead, 2 * s, 2 * s, 2 * s)


def occupancy_to_latent(occupancy):
  """`bool [..., R, R, R]` -> `float32 [..., R/2, R/2, R/2, 8]` in {-1, 1} (+1 = occupied)."""
  return fold(np.where(np.asarray(occupancy, bool), np.float32(1), np.float32(-1)))


def latent_to_occupancy(latent):
  """The toy decoder: `[..., S, S, S, 8]` -> `bool [..., 2S, 2S, 2S]`, occupied where > 0."""
  return unfold(latent) > 0
