"""The stage-2 toy features: 8 channels on each occupied voxel, a function of (occupancy, condition,
colour gradient).

Channels 0-4 are determined by the structure; channels 5-7 (colour) also carry randomness that
neither the structure nor the condition determines, so that generating stage 2 is sampling from a
distribution, not regression: each shape draws its own colour gradient G (float [3, 3], RGB per
unit of normalised position), as `sample_colour_gradients` states, and its voxel at position p has
the colour `family colour + G z(p)`, z(p) = (p - centroid) / (RMS distance of the shape's voxels to
the centroid). G = tint direction^T with the direction uniform on the unit sphere and the tint
N(0, COLOUR_TINT_STD^2 I_3), so E[G] = 0 and the family colour is the conditional mean.

Channels (FEATURE_CHANNELS), each scaled to roughly unit variance:
  0    height: z of the voxel, standardised over the shape's voxels (zero mean, unit variance).
  1    depth: Euclidean distance to the nearest empty voxel (outside the grid counts as empty),
       standardised over the shape's voxels.
  2-4  outward normal: minus the gradient of the occupancy smoothed by a Gaussian (sigma 1 voxel),
       divided by max(|gradient|, NORMAL_FLOOR) (unit length at the surface, shorter deep inside),
       times sqrt(3).
  5-7  colour: the family's colour plus the shape's colour gradient, standardised with the mean and
       standard deviation of the family colours.
A channel whose spread over the shape is zero (one voxel, or a uniform depth) is 0.
"""
import numpy as np
from scipy import ndimage

from mdt_jax.data.toy_condition import split_condition

FEATURE_CHANNELS = ("height", "depth", "normal_x", "normal_y", "normal_z", "red", "green", "blue")
COLOUR_CHANNELS = (5, 6, 7)
NORMAL_FLOOR = 0.05
# RGB in [0, 1], one row per family (toy_shapes.FAMILIES order).
FAMILY_COLOURS = np.array([
    [0.90, 0.20, 0.20], [0.95, 0.60, 0.10], [0.90, 0.85, 0.20], [0.30, 0.80, 0.30],
    [0.20, 0.80, 0.85], [0.20, 0.35, 0.90], [0.60, 0.30, 0.85], [0.90, 0.40, 0.75],
])
_COLOUR_MEAN, _COLOUR_STD = FAMILY_COLOURS.mean(0), FAMILY_COLOURS.std(0)
# The tint's standard deviation per RGB channel: the colour varies over a shape by about
# 0.3 * sqrt(1/3) = 0.17 RGB units (RMS), against 0.24-0.27 between the family colours.
COLOUR_TINT_STD = 0.3


def sample_colour_gradients(rng, n):
  """n shapes' colour gradients `float64 [n, 3, 3]` (RGB x position): tint direction^T, the direction
  uniform on the unit sphere, the tint N(0, COLOUR_TINT_STD^2 I_3). Draws 6 n normals from `rng`."""
  direction = rng.standard_normal((n, 3))
  direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
  tint = COLOUR_TINT_STD * rng.standard_normal((n, 3))
  return tint[:, :, None] * direction[:, None, :]


def normalised_positions(coords):
  """(p - centroid) / RMS distance to the centroid of int [N, 3] voxels: float64 [N, 3] (0 for N <= 1)."""
  p = np.asarray(coords, np.float64)
  if len(p) == 0:
    return p
  p = p - p.mean(0)
  rms = np.sqrt((p ** 2).sum(-1).mean())
  return p / rms if rms > 0 else np.zeros_like(p)


def _standardise(values):
  std = values.std() if len(values) else 0.0
  if std < 1e-6:
    return np.zeros_like(values)
  return (values - values.mean()) / std


def toy_features(occupancy, cond_id, colour_gradient=None):
  """Features of the occupied voxels of one shape.

  Args:
    occupancy: bool [R, R, R], axes (x, y, z).
    cond_id: the shape's condition id (toy_condition.condition_id).
    colour_gradient: float [3, 3], the shape's draw of `sample_colour_gradients`; None (zero) gives
      the conditional mean of the features given the structure and the condition.
  Returns:
    coords int32 [N, 3], the occupied voxels (x, y, z) in lexicographic order (np.argwhere), and
    feats float32 [N, 8], channels as the module docstring lists.
  """
  occ = np.asarray(occupancy, bool)
  if occ.ndim != 3 or len(set(occ.shape)) != 1:
    raise ValueError(f"occupancy must be a cubic [R, R, R] grid, got shape {occ.shape}")
  gradient = np.zeros((3, 3)) if colour_gradient is None else np.asarray(colour_gradient, np.float64)
  if gradient.shape != (3, 3):
    raise ValueError(f"colour_gradient must be [3, 3] (RGB x position), got shape {gradient.shape}")
  coords = np.argwhere(occ)
  height = _standardise(coords[:, 2].astype(np.float64))
  depth = _standardise(ndimage.distance_transform_edt(np.pad(occ, 1))[1:-1, 1:-1, 1:-1][occ])
  smooth = ndimage.gaussian_filter(occ.astype(np.float64), sigma=1.0, mode="constant")
  grad = np.stack(np.gradient(smooth), -1)[occ]
  scale = np.sqrt(3) / np.maximum(np.sqrt((grad ** 2).sum(-1, keepdims=True)), NORMAL_FLOOR)
  family, _ = split_condition(cond_id)
  colour = FAMILY_COLOURS[family] + normalised_positions(coords) @ gradient.T
  feats = np.concatenate([height[:, None], depth[:, None], -grad * scale,
                          (colour - _COLOUR_MEAN) / _COLOUR_STD], -1)
  return coords.astype(np.int32), feats.astype(np.float32)
