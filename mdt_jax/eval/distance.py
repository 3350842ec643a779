"""The toy's shape distance: 1 - IoU of occupancy grids, computed exactly."""
import numpy as np

_CHUNK_WORDS = 1 << 22  # 64-bit words of the pairwise AND held at once (32 MB)


def _pack(grids):
  """bool [M, ...] -> uint64 [M, W], each grid's voxels as bits (zero padded to whole words)."""
  bits = np.packbits(grids.reshape(len(grids), -1), axis=1)
  bits = np.pad(bits, ((0, 0), (0, -bits.shape[1] % 8)))
  return np.ascontiguousarray(bits).view(np.uint64)


def iou_distance(a, b=None):
  """1 - IoU between every shape of `a` and every shape of `b`.

  Args:
    a: bool [M, ...] occupancy grids (e.g. [M, R, R, R]); b: bool [K, ...] with the same grid shape,
      default `a`.
  Returns:
    float64 [M, K] in [0, 1]. Two empty grids are at distance 0 (toy_recovery's convention), an
    empty and a non-empty grid at 1. Intersections and unions are integer bit counts and the ratio
    is one float64 division, so equal IoUs give bit-equal distances: ties are exact. Bit counting
    avoids BLAS, whose thread start-up dominates small products on a busy machine.
  """
  a = np.asarray(a, bool)
  b = a if b is None else np.asarray(b, bool)
  if a.ndim < 2 or a.shape[1:] != b.shape[1:]:
    raise ValueError(f"iou_distance needs [M, ...] and [K, ...] of one grid shape, got {a.shape} and {b.shape}")
  pa = _pack(a)
  pb = pa if b is a else _pack(b)
  count_a = np.bitwise_count(pa).sum(1, dtype=np.int64)
  count_b = count_a if b is a else np.bitwise_count(pb).sum(1, dtype=np.int64)
  inter = np.empty((len(pa), len(pb)), np.int64)
  rows = max(1, _CHUNK_WORDS // max(1, pb.size))
  for start in range(0, len(pa), rows):
    both = pa[start:start + rows, None, :] & pb[None, :, :]
    inter[start:start + rows] = np.bitwise_count(both).sum(-1, dtype=np.int64)
  union = count_a[:, None] + count_b[None, :] - inter
  return 1.0 - np.where(union > 0, inter / np.maximum(union, 1), 1.0)
