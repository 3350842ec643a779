"""Benchmark sections of the 3D-asset path (issue 27 item 6): ``decode``, a Gaussian decoder's forward on a
sphere shell of voxels (TRELLIS's released decoder at 20,000 voxels), and ``render``, one view and a batch
of views of a TRELLIS-sized asset (:func:`mdt_jax.bench.gaussian_asset.sphere_shell_asset`, 640,000
Gaussians) at 512 x 512. Each adds its :class:`mdt_jax.bench.measure.Result` rows to a report; they run on
the default backend (CPU figures everywhere, GPU figures where one is present)."""
from __future__ import annotations

import jax
import numpy as np

from mdt_jax.bench.gaussian_asset import shell_voxels
from mdt_jax.bench.measure import Report, Result, measure
from mdt_jax.render import count_tile_pairs, orbit_cameras, pair_capacity, render_gaussians
from mdt_jax.sparse import SparseTensor

GAUSSIAN_FIELDS = ("xyz", "scaling", "rotation", "opacity", "color")


def decode_section(report: Report, model, params, *, num_voxels: int = 20_000, repeats: int = 3,
                   seed: int = 0) -> Result:
  """The decoder ``model`` (``params``) on one sample of ``num_voxels`` shell voxels of its resolution with
  N(0, 1) latents: the network output (``model.apply``), not the representation."""
  coords = shell_voxels(num_voxels, model.resolution)
  coords = np.concatenate([np.zeros((num_voxels, 1), np.int64), coords[np.lexsort(coords.T[::-1])]], 1)
  feats = np.random.default_rng(seed).standard_normal((num_voxels, model.latent_channels)).astype(np.float32)
  x = SparseTensor.from_packed(coords.astype(np.int32), feats)
  n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
  return measure(report, "decode", f"{type(model).__name__} {num_voxels} voxels",
                 lambda p, x: model.apply({"params": p}, x).feats, params, x, repeats=repeats,
                 notes=f"{n_params / 1e6:.1f} M params, capacity {x.capacity}")


def render_section(report: Report, asset: dict, *, resolution: int = 512, view_counts=(1, 4),
                   repeats: int = 3) -> list[Result]:
  """``asset`` (activated Gaussians: :data:`GAUSSIAN_FIELDS`) rendered at ``resolution`` square from the
  first ``V`` of TRELLIS's 4 orbit views, in one call, for each ``V`` of ``view_counts``; the capacity is
  the bucket of the busiest view's (tile, Gaussian) pairs (counted first, not timed)."""
  extrinsics, intrinsics = orbit_cameras([0.0, 90.0, 180.0, 270.0], 30.0, 2.0, 40.0)
  gaussians = [jax.numpy.asarray(asset[k]) for k in GAUSSIAN_FIELDS]
  results = []
  for views in view_counts:
    e, k = extrinsics[:views], intrinsics[:views]
    pairs = count_tile_pairs(*gaussians[:4], extrinsics=e, intrinsics=k, height=resolution, width=resolution)
    capacity = pair_capacity(int(pairs.max()))

    def render(xyz, scaling, rotation, opacity, color, e=e, k=k, capacity=capacity):
      return render_gaussians(xyz, scaling, rotation, opacity, color, extrinsics=e, intrinsics=k, height=resolution,
                              width=resolution, bg=np.zeros(3, np.float32), capacity=capacity)

    case = f"{len(gaussians[0])} Gaussians {resolution}x{resolution} x{views} view{'s' * (views > 1)}"
    results.append(measure(report, "render", case, render, *gaussians, repeats=repeats,
                           notes=f"{int(pairs.sum())} tile pairs, capacity {capacity} per view"))
  return results
