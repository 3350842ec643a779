"""Procedural primitive shapes with random size, position and heading, voxelised to occupancy grids.

Shapes stand upright, as the assets TRELLIS is trained on do (Objaverse-style objects in their
canonical pose): a shape's local +z is the grid's +z and only its heading (a rotation about z) is
random. Under uniformly random 3D rotations (this dataset's version 1) every condition was a
distribution over all orientations, and a 1.5M-parameter teacher trained on 2 CPU cores learned
the shapes' marginal but not their families (fidelity 0.26); upright, the same teacher follows its
condition (docs/toy_benchmark.md).
Families are chosen and proportioned to stay distinguishable at R = 16 under any heading.
Every family is defined in a local frame where the shape fits the unit ball; a shape is then scaled
by its bounding radius, turned by its heading and centred near the grid centre:
  grid point p (fraction of R, voxel centres (i + 0.5) / R)  ->  local q = rotation^T (p - centre) / radius.
The position jitter is kept moderate (see POSITION_JITTER) so that pose does not dominate a shape's
identity. All arithmetic is elementwise float64 (no BLAS), so with a given numpy a seed gives the
same bytes on any machine.
"""
import dataclasses

import numpy as np

FAMILIES = ("sphere", "box", "cylinder", "cone", "torus", "capsule", "pyramid", "octahedron")
# Bounding radius of each size bucket, as a fraction of the grid side R.
SIZE_BUCKETS = ((0.22, 0.28), (0.29, 0.35), (0.36, 0.42))
# Centre offset from the grid centre, uniform in [-jitter, jitter] per axis, fraction of R. With the
# largest radius (0.42) every shape stays inside the grid.
POSITION_JITTER = 0.06


@dataclasses.dataclass(frozen=True)
class ShapeParams:
  """Parameters of n shapes.

  family int64 [n] (index into FAMILIES), size_bucket int64 [n] (index into SIZE_BUCKETS),
  radius float64 [n] (bounding radius, fraction of R), centre float64 [n, 3] (fraction of R),
  rotation float64 [n, 3, 3] (local -> grid, about z), aspect float64 [n, 3] in [0, 1) (family ratios).
  """
  family: np.ndarray
  size_bucket: np.ndarray
  radius: np.ndarray
  centre: np.ndarray
  rotation: np.ndarray
  aspect: np.ndarray

  def __len__(self):
    return len(self.family)

  def take(self, index):
    """The shapes at `index` (an index array or a slice)."""
    return ShapeParams(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})


def random_headings(rng, n):
  """Rotations about z by a uniformly random angle: `float64 [n, 3, 3]`."""
  angle = rng.uniform(0.0, 2 * np.pi, n)
  cos, sin, zero, one = np.cos(angle), np.sin(angle), np.zeros(n), np.ones(n)
  return np.stack([np.stack([cos, -sin, zero], -1), np.stack([sin, cos, zero], -1),
                   np.stack([zero, zero, one], -1)], -2)


def sample_shapes(rng, family, size_bucket):
  """Random `ShapeParams` for the given `family` and `size_bucket` int arrays [n]."""
  family = np.asarray(family, np.int64)
  size_bucket = np.asarray(size_bucket, np.int64)
  n = len(family)
  lo, hi = np.asarray(SIZE_BUCKETS, np.float64)[size_bucket].T
  radius = lo + (hi - lo) * rng.random(n)
  centre = 0.5 + rng.uniform(-POSITION_JITTER, POSITION_JITTER, (n, 3))
  return ShapeParams(family=family, size_bucket=size_bucket, radius=radius, centre=centre,
                     rotation=random_headings(rng, n), aspect=rng.random((n, 3)))


def _lerp(u, lo, hi):
  return lo + (hi - lo) * u


def _radial(q):
  return np.sqrt(q[..., 0] ** 2 + q[..., 1] ** 2)


def _sphere(q, u):
  return (q ** 2).sum(-1) <= 1


def _box(q, u):
  # A brick: half extents in ratio 1 : 0.55-0.75 : 0.3-0.45 (a cube reads as a sphere at R = 16).
  half = np.stack([np.ones(len(u)), _lerp(u[:, 1], 0.55, 0.75), _lerp(u[:, 2], 0.3, 0.45)], -1)
  half = half / np.sqrt((half ** 2).sum(-1, keepdims=True))
  return np.all(np.abs(q) <= half[:, None, None, None, :], -1)


def _cylinder(q, u):
  ratio = _lerp(u[:, :1, None, None], 0.35, 0.55)  # half height / radius: a disc, unlike the sphere
  r = 1 / np.sqrt(1 + ratio ** 2)
  return (_radial(q) <= r) & (np.abs(q[..., 2]) <= ratio * r)


def _cone(q, u):
  ratio = _lerp(u[:, :1, None, None], 1.4, 1.8)  # half height / base radius; apex at +z
  r = 1 / np.sqrt(1 + ratio ** 2)
  h = ratio * r
  return (np.abs(q[..., 2]) <= h) & (_radial(q) <= r * (h - q[..., 2]) / (2 * h))


def _torus(q, u):
  ratio = _lerp(u[:, :1, None, None], 0.35, 0.5)  # tube radius / ring radius
  ring = 1 / (1 + ratio)
  return (_radial(q) - ring) ** 2 + q[..., 2] ** 2 <= (ratio * ring) ** 2


def _capsule(q, u):
  tube = _lerp(u[:, :1, None, None], 0.35, 0.45)
  half = 1 - tube
  along = np.clip(q[..., 2], -half, half)
  return _radial(q) ** 2 + (q[..., 2] - along) ** 2 <= tube ** 2


def _pyramid(q, u):
  # Square base, apex at +z; half height / base half width 0.6-0.8: squat, unlike the tall cone.
  ratio = _lerp(u[:, :1, None, None], 0.6, 0.8)
  b = 1 / np.sqrt(2 + ratio ** 2)
  h = ratio * b
  return (np.abs(q[..., 2]) <= h) & (
      np.maximum(np.abs(q[..., 0]), np.abs(q[..., 1])) <= b * (h - q[..., 2]) / (2 * h))


def _octahedron(q, u):
  axes = _lerp(u, 0.8, 1.0)
  axes = axes / axes.max(-1, keepdims=True)
  return (np.abs(q) / axes[:, None, None, None, :]).sum(-1) <= 1


_INSIDE = (_sphere, _box, _cylinder, _cone, _torus, _capsule, _pyramid, _octahedron)
assert len(_INSIDE) == len(FAMILIES)


def _local_coords(params, resolution):
  """Grid voxel centres in each shape's local frame: `float64 [n, R, R, R, 3]`.

  The map is affine and the grid separable, so each local coordinate is a sum of three per-axis
  terms (broadcast over x, y, z).
  """
  axis = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution
  d = (axis[None, :, None] - params.centre[:, None, :]) / params.radius[:, None, None]  # [n, R, 3]
  rot = params.rotation
  q = []
  for i in range(3):
    t = d[:, :, :, None] * rot[:, None, :, i, None]  # [n, R, 3 (grid axis), 1]
    q.append(t[:, :, None, None, 0, 0] + t[:, None, :, None, 1, 0] + t[:, None, None, :, 2, 0])
  return np.stack(q, -1)


def voxelize(params, resolution, chunk_points=1 << 21):
  """Occupancy `bool [n, R, R, R]` (axes x, y, z) of the shapes, sampled at voxel centres."""
  n = len(params)
  occupancy = np.zeros((n, resolution, resolution, resolution), bool)
  step = max(1, chunk_points // resolution ** 3)
  for start in range(0, n, step):
    part = params.take(slice(start, start + step))
    q = _local_coords(part, resolution)
    for f, inside in enumerate(_INSIDE):
      rows = np.flatnonzero(part.family == f)
      if len(rows):
        occupancy[start + rows] = inside(q[rows], part.aspect[rows])
  return occupancy
