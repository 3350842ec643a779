"""3D Gaussians as a PLY file in the layout of 3D Gaussian splatting (what splat viewers read):
binary little-endian float32 vertices with the properties ``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 opacity
scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3``. Opacities are stored as logits and scales as logs (a
viewer applies sigmoid and exp), rotations as (w, x, y, z) quaternions, normals as 0.

Positions and rotations are turned by ``transform`` (a rotation matrix) on the way out: by default
:data:`Z_UP_TO_Y_UP`, ``(x, y, z) -> (x, -z, y)``, from TRELLIS's z-up frame to the y-up frame splat viewers
assume (the transform TRELLIS's ``save_ply`` applies by default, as far as we know: no fixture covers it;
pass ``transform=np.eye(3)`` to keep TRELLIS's frame).
"""
from __future__ import annotations

import numpy as np
import plyfile

Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
PROPERTIES = ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
              "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
  """A 3x3 rotation matrix -> its unit quaternion (w, x, y, z), w >= 0."""
  w = np.sqrt(max(0.0, 1.0 + np.trace(m))) / 2
  x = np.copysign(np.sqrt(max(0.0, 1.0 + m[0, 0] - m[1, 1] - m[2, 2])) / 2, m[2, 1] - m[1, 2])
  y = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] + m[1, 1] - m[2, 2])) / 2, m[0, 2] - m[2, 0])
  z = np.copysign(np.sqrt(max(0.0, 1.0 - m[0, 0] - m[1, 1] + m[2, 2])) / 2, m[1, 0] - m[0, 1])
  return np.array([w, x, y, z])


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Hamilton product of (w, x, y, z) quaternions, broadcasting: the rotation ``a`` after ``b``."""
  aw, ax, ay, az = np.moveaxis(a, -1, 0)
  bw, bx, by, bz = np.moveaxis(b, -1, 0)
  return np.stack([aw * bw - ax * bx - ay * by - az * bz, aw * bx + ax * bw + ay * bz - az * by,
                   aw * by - ax * bz + ay * bw + az * bx, aw * bz + ax * by - ay * bx + az * bw], -1)


def gaussians_to_vertices(gaussians, transform=Z_UP_TO_Y_UP) -> np.ndarray:
  """Activated Gaussians (``xyz`` [n, 3], ``scaling`` [n, 3], ``rotation`` [n, 4], ``opacity`` [n] or
  [n, 1], ``features_dc`` [n, 1, 3] or [n, 3]) -> [n, 17] float32 rows in :data:`PROPERTIES` order.
  Raises ValueError naming the sample's non-finite fields."""
  g = {k: np.asarray(gaussians[k], np.float64) for k in ("xyz", "scaling", "rotation", "opacity", "features_dc")}
  bad = [k for k, v in g.items() if not np.all(np.isfinite(v))]
  if bad:
    raise ValueError(f"non-finite Gaussian field(s) {bad}: not written")
  n = g["xyz"].shape[0]
  m = np.asarray(transform, np.float64)
  rotation = quaternion_multiply(matrix_to_quaternion(m), g["rotation"])
  opacity = np.clip(g["opacity"].reshape(n), 1e-7, 1 - 1e-7)
  return np.concatenate([g["xyz"] @ m.T, np.zeros((n, 3)), g["features_dc"].reshape(n, 3),
                         np.log(opacity / (1 - opacity))[:, None], np.log(g["scaling"]), rotation],
                        axis=1).astype(np.float32)


def write_gaussians_ply(path, gaussians, transform=Z_UP_TO_Y_UP):
  """Writes :func:`gaussians_to_vertices` of ``gaussians`` to ``path`` (binary little-endian PLY, plyfile)."""
  rows = gaussians_to_vertices(gaussians, transform)
  vertices = np.rec.fromarrays(list(rows.T), dtype=[(p, "<f4") for p in PROPERTIES])
  plyfile.PlyData([plyfile.PlyElement.describe(vertices, "vertex")]).write(str(path))


def read_gaussians_ply(path) -> dict[str, np.ndarray]:
  """Reads a 3DGS-layout PLY (e.g. of :func:`write_gaussians_ply`) -> ``{property: [n] float32}`` (raw
  stored values, in the file's property order)."""
  vertex = plyfile.PlyData.read(str(path))["vertex"]
  return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}
