"""TRELLIS's orbit cameras (``render_utils.yaw_pitch_r_fov_to_extrinsics_intrinsics``; decoder fixtures README,
section 5): OpenCV world-to-camera extrinsics looking at the origin, world up +z, normalised intrinsics."""
from __future__ import annotations

import numpy as np


def orbit_cameras(yaws_deg, pitch_deg: float, radius: float, fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
  """-> (extrinsics [V, 4, 4], intrinsics [V, 3, 3]) float32 for each yaw (degrees).

  ``eye = r (sin yaw cos pitch, cos yaw cos pitch, sin pitch)``; ``z = normalize(-eye)``,
  ``x = normalize((-up) x z)``, ``y = z x x``, ``R = [x; y; z]``, ``t = -R eye``; intrinsics
  ``f = 0.5 / tan(fov / 2)``, centre 0.5.
  """
  extrinsics, intrinsics = [], []
  up = np.array([0.0, 0.0, 1.0])
  f = 0.5 / np.tan(np.deg2rad(fov_deg) / 2)
  for yaw in np.deg2rad(np.asarray(yaws_deg, np.float64)):
    pitch = np.deg2rad(pitch_deg)
    eye = radius * np.array([np.sin(yaw) * np.cos(pitch), np.cos(yaw) * np.cos(pitch), np.sin(pitch)])
    z = -eye / np.linalg.norm(eye)
    x = np.cross(-up, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rot = np.stack([x, y, z])
    e = np.eye(4)
    e[:3, :3], e[:3, 3] = rot, -rot @ eye
    extrinsics.append(e)
    intrinsics.append(np.array([[f, 0, 0.5], [0, f, 0.5], [0, 0, 1]]))
  return np.asarray(extrinsics, np.float32), np.asarray(intrinsics, np.float32)
