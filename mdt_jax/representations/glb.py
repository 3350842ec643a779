"""A triangle mesh with vertex colours as a binary glTF 2.0 file (``.glb``, written by trimesh), the format
of ``sample_<i>_mesh.glb``: ``POSITION`` float32, ``COLOR_0`` 8-bit RGBA (what glTF viewers show), uint32
indices. Positions are turned from TRELLIS's z-up frame to glTF's y-up frame by ``transform`` (default
:data:`mdt_jax.representations.ply.Z_UP_TO_Y_UP`)."""
from __future__ import annotations

import numpy as np
import trimesh

from mdt_jax.representations.ply import Z_UP_TO_Y_UP


def write_mesh_glb(path, vertices, faces, vertex_colors=None, transform=Z_UP_TO_Y_UP):
  """vertices [V, 3], faces [F, 3] int (counter-clockwise from outside), vertex_colors [V, 3] in [0, 1]
  (stored rounded to 8 bits) or None -> ``path``. ValueError naming a face index out of range or
  non-finite vertices."""
  vertices = np.asarray(vertices, np.float64) @ np.asarray(transform, np.float64).T
  faces = np.asarray(faces, np.int64).reshape(-1, 3)
  if not np.all(np.isfinite(vertices)):
    raise ValueError("write_mesh_glb: non-finite vertices: not written")
  if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
    raise ValueError(f"write_mesh_glb: face indices must lie in [0, {len(vertices)}), got "
                     f"[{faces.min()}, {faces.max()}]")
  colors = None
  if vertex_colors is not None:
    colors = np.round(np.clip(np.asarray(vertex_colors, np.float64), 0, 1) * 255).astype(np.uint8)
  trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False).export(str(path), file_type="glb")


def read_mesh_glb(path) -> dict[str, np.ndarray]:
  """Reads a one-mesh ``.glb`` (e.g. of :func:`write_mesh_glb`) -> ``vertices`` [V, 3] float64, ``faces``
  [F, 3] and, if it has them, ``vertex_colors`` [V, 3] in [0, 1], in the file's (y-up) frame."""
  scene = trimesh.load(str(path), file_type="glb", process=False, force="scene")
  if len(scene.geometry) != 1:
    raise ValueError(f"{path}: expected one mesh, found {len(scene.geometry)}")
  mesh = next(iter(scene.geometry.values()))
  out = {"vertices": np.asarray(mesh.vertices), "faces": np.asarray(mesh.faces)}
  if mesh.visual.kind == "vertex":
    out["vertex_colors"] = np.asarray(mesh.visual.vertex_colors[:, :3], np.float64) / 255
  return out
