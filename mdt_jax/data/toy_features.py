"""The stage-2 toy features: 8 channels on each occupied voxel, a function of (occupancy, condition).

Training data and evaluation both call `toy_features`, so the features of generated voxels can be
scored exactly against the features their generated occupancy and condition imply.

Channels (FEATURE_CHANNELS), each scaled to roughly unit variance:
  0    height: z of the voxel, standardised over the shape's voxels (zero mean, unit variance).
  1    depth: Euclidean distance to the nearest empty voxel (outside the grid counts as empty),
       standardised over the shape's voxels.
  2-4  outward normal: minus the gradient of the occupancy smoothed by a Gaussian (sigma 1 voxel),
       divided by max(|gradient|, NORMAL_FLOOR) (unit length at the surface, shorter deep inside),
       times sqrt(3).
  5-7  the family's colour, standardised over the families.
A channel whose spread over the shape is zero (one voxel, or a uniform depth) is 0.
"""
import numpy as np
from scipy import ndimage

from mdt_jax.data.toy_condition import split_condition

FEATURE_CHANNELS = ("height", "depth", "normal_x", "normal_y", "normal_z", "red", "green", "blue")
NORMAL_FLOOR = 0.05
# RGB in [0, 1], one row per family (toy_shapes.FAMILIES order).
FAMILY_COLOURS = np.array([
    [0.90, 0.20, 0.20], [0.95, 0.60, 0.10], [0.90, 0.85, 0.20], [0.30, 0.80, 0.30],
    [0.20, 0.80, 0.85], [0.20, 0.35, 0.90], [0.60, 0.30, 0.85], [0.90, 0.40, 0.75],
])
_COLOUR_FEATURES = (FAMILY_COLOURS - FAMILY_COLOURS.mean(0)) / FAMILY_COLOURS.std(0)


def _standardise(values):
  std = values.std() if len(values) else 0.0
  if std < 1e-6:
    return np.zeros_like(values)
  return (values - values.mean()) / std


def toy_features(occupancy, cond_id):
  """Features of the occupied voxels of one shape.

  Args:
    occupancy: bool [R, R, R], axes (x, y, z).
    cond_id: the shape's condition id (toy_condition.condition_id).
  Returns:
    coords int32 [N, 3], the occupied voxels (x, y, z) in lexicographic order (np.argwhere), and
    feats float32 [N, 8], channels as the module docstring lists.
  """
  occ = np.asarray(occupancy, bool)
  if occ.ndim != 3 or len(set(occ.shape)) != 1:
    raise ValueError(f"occupancy must be a cubic [R, R, R] grid, got shape {occ.shape}")
  coords = np.argwhere(occ)
  height = _standardise(coords[:, 2].astype(np.float64))
  depth = _standardise(ndimage.distance_transform_edt(np.pad(occ, 1))[1:-1, 1:-1, 1:-1][occ])
  smooth = ndimage.gaussian_filter(occ.astype(np.float64), sigma=1.0, mode="constant")
  grad = np.stack(np.gradient(smooth), -1)[occ]
  scale = np.sqrt(3) / np.maximum(np.sqrt((grad ** 2).sum(-1, keepdims=True)), NORMAL_FLOOR)
  family, _ = split_condition(cond_id)
  colour = np.broadcast_to(_COLOUR_FEATURES[family], (len(coords), 3))
  feats = np.concatenate([height[:, None], depth[:, None], -grad * scale, colour], -1)
  return coords.astype(np.int32), feats.astype(np.float32)
