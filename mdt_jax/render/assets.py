"""One generated sample's 3D asset files: ``sample_<i>_gaussians.ply`` (the 3D Gaussian splatting layout),
``sample_<i>_mesh.glb`` (vertex colours; when a mesh is given), ``sample_<i>.png`` (views rendered from
the Gaussians by :func:`mdt_jax.render.render_gaussians`, side by side) and ``sample_<i>_turntable.mp4``
(an orbit rendered the same way, H.264 through imageio-ffmpeg). The library call an entry point makes per
sample once the decoders have run."""
from __future__ import annotations

from pathlib import Path

import imageio.v2 as imageio
import numpy as np
from PIL import Image

from mdt_jax.render.cameras import orbit_cameras
from mdt_jax.render.rasterizer import render_gaussians
from mdt_jax.representations.glb import write_mesh_glb
from mdt_jax.representations.ply import write_gaussians_ply

# TRELLIS's render_utils views: yaw 0/90/180/270 degrees, pitch 30, radius 2, field of view 40.
VIEWS = {"yaws_deg": (0.0, 90.0, 180.0, 270.0), "pitch_deg": 30.0, "radius": 2.0, "fov_deg": 40.0}
# The turntable's orbit: the evaluation views' pitch, radius and field of view, the yaw turning once.
TURNTABLE = {"pitch_deg": 30.0, "radius": 2.0, "fov_deg": 40.0}
FIELDS = ("xyz", "scaling", "rotation", "opacity", "color", "features_dc")


class NonFiniteAsset(ValueError):
  """A sample's Gaussians or mesh hold NaN or inf: nothing of it is written."""


def render_views(gaussians, *, resolution: int = 512, bg=(0.0, 0.0, 0.0), views=VIEWS) -> np.ndarray:
  """Activated Gaussians -> [V, resolution, resolution, 3] float32 renders from the orbit ``views``."""
  extrinsics, intrinsics = orbit_cameras(views["yaws_deg"], views["pitch_deg"], views["radius"], views["fov_deg"])
  rgb, _ = render_gaussians(*(gaussians[k] for k in FIELDS[:5]), extrinsics=extrinsics, intrinsics=intrinsics,
                            height=resolution, width=resolution, bg=np.asarray(bg, np.float32))
  return np.asarray(rgb)


def to_uint8(images) -> np.ndarray:
  """[..., 3] float in [0, 1] -> uint8, rounded."""
  return np.round(np.clip(np.asarray(images), 0, 1) * 255).astype(np.uint8)


def write_turntable(path, gaussians, *, frames: int = 120, fps: int = 30, resolution: int = 512,
                    view_batch: int = 8, bg=(0.0, 0.0, 0.0)):
  """An orbit of ``frames`` views (yaw ``360 k / frames`` degrees, :data:`TURNTABLE`) rendered ``view_batch``
  views per rasterizer call -> ``path`` (H.264 mp4 at ``fps``; ``resolution`` must be even for yuv420p)."""
  if resolution % 2:
    raise ValueError(f"write_turntable: resolution must be even (H.264 yuv420p), got {resolution}")
  yaws = 360.0 * np.arange(frames) / frames
  with imageio.get_writer(str(path), fps=fps, codec="libx264", macro_block_size=2, quality=8,
                          ffmpeg_log_level="error") as writer:
    for start in range(0, frames, view_batch):
      chunk = yaws[start:start + view_batch]
      views = dict(TURNTABLE, yaws_deg=np.pad(chunk, (0, view_batch - len(chunk)), mode="edge"))
      for frame in to_uint8(render_views(gaussians, resolution=resolution, bg=bg, views=views))[:len(chunk)]:
        writer.append_data(frame)


def asset_paths(directory, index: int, *, with_mesh: bool) -> dict[str, Path]:
  """The files of sample ``index`` under ``directory``, by kind (``gaussians``, ``mesh``, ``views``,
  ``turntable``)."""
  directory = Path(directory)
  paths = {"gaussians": directory / f"sample_{index}_gaussians.ply", "views": directory / f"sample_{index}.png",
           "turntable": directory / f"sample_{index}_turntable.mp4"}
  if with_mesh:
    paths["mesh"] = directory / f"sample_{index}_mesh.glb"
  return paths


def write_sample_assets(directory, index: int, gaussians, mesh=None, *, resolution: int = 512,
                        turntable_frames: int = 120, overwrite: bool = False) -> dict[str, Path]:
  """Writes sample ``index``'s files (see the module docstring) and returns their paths.

  ``gaussians``: one dict of a Gaussian decoder's ``to_representation``; ``mesh``: one of a mesh decoder's
  (``vertices``, ``faces``, ``vertex_colors``) or None; ``turntable_frames`` views in the mp4. Raises
  :class:`NonFiniteAsset` naming the sample and the fields when any value is not finite (nothing
  written), FileExistsError naming the files that exist unless ``overwrite``.
  """
  bad = [k for k in FIELDS if not np.all(np.isfinite(np.asarray(gaussians[k])))]
  if mesh is not None:
    bad += [f"mesh {k}" for k in ("vertices", "vertex_colors") if k in mesh and not np.all(np.isfinite(mesh[k]))]
  if bad:
    raise NonFiniteAsset(f"sample {index}: non-finite {bad}; skipped")
  paths = asset_paths(directory, index, with_mesh=mesh is not None)
  existing = [str(p) for p in paths.values() if p.exists()]
  if existing and not overwrite:
    raise FileExistsError(f"sample {index}: {existing} exist; refusing to overwrite (overwrite=True replaces them)")
  Path(directory).mkdir(parents=True, exist_ok=True)
  write_gaussians_ply(paths["gaussians"], gaussians)
  if mesh is not None:
    write_mesh_glb(paths["mesh"], mesh["vertices"], mesh["faces"], mesh.get("vertex_colors"))
  views = render_views(gaussians, resolution=resolution)
  Image.fromarray(to_uint8(np.concatenate(list(views), axis=1))).save(paths["views"])   # views side by side
  write_turntable(paths["turntable"], gaussians, frames=turntable_frames, resolution=resolution)
  return paths
