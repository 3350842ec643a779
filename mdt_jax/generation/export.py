"""Writing generated shapes: latents as .npz, voxels as a PLY point cloud, PNG views of the voxels.

Voxel coordinates are integer grid indices ``coords [n, 3]`` (x, y, z) in ``[0, resolution)``; in
the PLY they become voxel centres in the unit cube ``[-0.5, 0.5]^3``: ``(c + 0.5) / resolution - 0.5``.
The renders and the PLY colours show height (the third axis) from blue (low) to yellow (high).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from conversion.common import atomic_write

VIEWS = ((20.0, 30.0), (20.0, 120.0), (20.0, 210.0), (80.0, 300.0))  # (elevation, azimuth) in degrees


def save_npz(path: str | Path, **arrays):
  """The named arrays into one .npz, written atomically."""
  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  atomic_write(path, write)


def save_latents(path: str | Path, coords: np.ndarray, feats: np.ndarray, resolution: int):
  """``coords`` [n, 3] int32 (x, y, z), ``feats`` [n, C] float32 and ``resolution`` into one .npz."""
  save_npz(path, coords=coords.astype(np.int32), feats=feats.astype(np.float32), resolution=np.int32(resolution))


def _height_colours(coords: np.ndarray, resolution: int) -> np.ndarray:
  """[n, 3] float RGB in [0, 1] from the viridis colour map of the normalised third coordinate."""
  from matplotlib import colormaps
  return colormaps["viridis"]((coords[:, 2] + 0.5) / resolution)[:, :3]


def write_ply(path: str | Path, coords: np.ndarray, resolution: int):
  """ASCII PLY point cloud: one vertex per voxel centre (float x, y, z) with uchar RGB by height."""
  centres = (coords.astype(np.float64) + 0.5) / resolution - 0.5
  rgb = np.round(_height_colours(coords, resolution) * 255).astype(np.int64)
  header = ["ply", "format ascii 1.0", f"element vertex {len(coords)}", "property float x", "property float y",
            "property float z", "property uchar red", "property uchar green", "property uchar blue", "end_header"]
  rows = [f"{x:.6f} {y:.6f} {z:.6f} {r} {g} {b}" for (x, y, z), (r, g, b) in zip(centres, rgb)]
  atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(header + rows) + "\n"))


def render_views(path: str | Path, coords: np.ndarray, resolution: int, *, title: str = "",
                 views=VIEWS, size_inches: float = 3.0):
  """A PNG of the voxels seen from each (elevation, azimuth) in ``views`` (matplotlib, square markers)."""
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt

  fig = plt.figure(figsize=(size_inches * len(views), size_inches + 0.4))
  marker = max(0.5, (size_inches * 72 / resolution) ** 2 * 0.35)  # about a voxel's area in points^2
  for i, (elev, azim) in enumerate(views):
    ax = fig.add_subplot(1, len(views), i + 1, projection="3d")
    if len(coords):
      ax.scatter(coords[:, 0], coords[:, 1], coords[:, 2], c=_height_colours(coords, resolution), marker="s",
                 s=marker, depthshade=True, linewidths=0)
    ax.set(xlim=(0, resolution), ylim=(0, resolution), zlim=(0, resolution), xticks=[], yticks=[], zticks=[])
    ax.set_box_aspect((1, 1, 1))
    ax.view_init(elev=elev, azim=azim)
    ax.set_title(f"elev {elev:g}, azim {azim:g}", fontsize=8)
  fig.suptitle(title or f"{len(coords)} voxels", fontsize=10)
  fig.tight_layout()
  atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
  plt.close(fig)
