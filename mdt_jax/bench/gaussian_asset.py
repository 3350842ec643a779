"""A TRELLIS-sized Gaussian asset for rendering benchmarks: ``per_voxel`` Gaussians on each of
``num_voxels`` voxels of a sphere shell in a ``resolution^3`` grid (defaults: 32 x 20,000 = 640,000, 64^3),
shaped like a decoded asset (Gaussians spread over their voxel by the Hammersley offsets, about a third of
a voxel wide, opacities 0.2-0.9)."""
from __future__ import annotations

import numpy as np

from mdt_jax.representations.gaussians import hammersley


def shell_voxels(num_voxels: int = 20_000, resolution: int = 64) -> np.ndarray:
  """The ``num_voxels`` voxels of a ``resolution^3`` grid closest to a sphere of radius 0.4 R (a shell about
  two voxels thick at 20,000 of 64^3) -> int64 [num_voxels, 3] (x, y, z), nearest first."""
  ijk = np.stack(np.meshgrid(*[np.arange(resolution)] * 3, indexing="ij"), -1).reshape(-1, 3)
  dist = np.linalg.norm(ijk + 0.5 - resolution / 2, axis=1)
  return ijk[np.argsort(np.abs(dist - 0.4 * resolution), kind="stable")[:num_voxels]]


def sphere_shell_asset(num_voxels: int = 20_000, per_voxel: int = 32, resolution: int = 64, seed: int = 0):
  """-> dict of float32 arrays ``xyz`` [n, 3] (in [-0.5, 0.5]^3), ``scaling`` [n, 3], ``rotation`` [n, 4]
  (w, x, y, z), ``opacity`` [n], ``color`` [n, 3], n = num_voxels x per_voxel."""
  rng = np.random.default_rng(seed)
  voxels = shell_voxels(num_voxels, resolution)
  offsets = hammersley(per_voxel)                                         # [G, 3] in [0, 1)
  xyz = ((voxels[:, None, :] + offsets[None]) / resolution - 0.5).reshape(-1, 3)
  n = len(xyz)
  q = rng.normal(size=(n, 4))
  return {
      "xyz": xyz.astype(np.float32),
      "scaling": np.full((n, 3), 1.0 / (3 * resolution), np.float32) * rng.uniform(0.5, 1.5, (n, 3)).astype(np.float32),
      "rotation": (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32),
      "opacity": rng.uniform(0.2, 0.9, n).astype(np.float32),
      "color": rng.uniform(0, 1, (n, 3)).astype(np.float32),
  }
