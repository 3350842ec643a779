"""A batch of sparse voxel sets with static shapes (docs/design.md, Sparse tensors).

Rows of a sample are contiguous and in input order; the batch is padded to a capacity from a
small fixed ladder (:func:`bucket_capacity`) so a run compiles a handful of programs, not one per
batch. Padding rows have ``mask`` False, coordinates 0 and features 0, and never change a result.

Down-sampled levels (the SLat model's 2x parents) need a static capacity too. Optionally the tensor
carries ``coarse_capacities``: the bucketed capacities of its 2x, 4x, ... parent levels, computed on
the host from the coordinates (:func:`coarse_capacities`). Without them a parent level keeps the
capacity of the level below it (always enough, since parents <= children, but every coarse
transformer token then costs as much as a fine row).
"""
from __future__ import annotations

import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

_MIN_CAPACITY = 16


def bucket_capacity(n: int) -> int:
  """Smallest capacity on the ladder 16, 24, 32, 48, 64, 96, ... (2^k and 1.5 * 2^k) that holds
  ``n`` rows: at most a third of a batch is padding."""
  if n <= _MIN_CAPACITY:
    return _MIN_CAPACITY
  k = 2 ** math.floor(math.log2(n))
  for cap in (k, 3 * k // 2, 2 * k):
    if cap >= n:
      return cap
  raise AssertionError("unreachable: 2k >= n")


def coarse_capacities(coords, mask, levels: int) -> tuple[int, ...]:
  """Bucketed capacities of the parent levels 1..``levels`` (coords // 2^l), host side.

  coords: [..., cap, 4] int (b, x, y, z), mask: [..., cap]; leading axes (devices) share one
  capacity per level: the bucket of the largest number of distinct parents.
  """
  coords = np.asarray(coords).reshape(-1, *np.shape(coords)[-2:])
  mask = np.asarray(mask).reshape(coords.shape[:2])
  out = []
  for level in range(1, levels + 1):
    parents = []
    for c, m in zip(coords, mask):
      p = np.concatenate([c[m, :1], c[m, 1:] >> level], 1).astype(np.int64)
      keys = np.ravel_multi_index(p.T, tuple(p.max(0) + 1)) if len(p) else p[:, 0]
      parents.append(len(np.unique(keys)))
    out.append(bucket_capacity(max(parents)))
  return tuple(out)


@flax.struct.dataclass
class SparseTensor:
  """coords [cap, 4] int32 (batch index, x, y, z); feats [cap, C]; mask [cap] bool; static batch_size;
  static ``coarse_capacities`` (optional, see the module docstring)."""
  coords: jax.Array
  feats: jax.Array
  mask: jax.Array
  batch_size: int = flax.struct.field(pytree_node=False)
  coarse_capacities: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())

  @classmethod
  def from_packed(cls, coords, feats, *, capacity: int | None = None, batch_size: int | None = None,
                  coarse_levels: int = 0) -> "SparseTensor":
    """TRELLIS's packed layout -> padded tensor (host side).

    coords: [N, 4] int (batch index, then 3 spatial), rows grouped by batch index in increasing
    order; feats: [N, C]. ``capacity`` defaults to ``bucket_capacity(N)``; ``batch_size`` to
    ``max(batch index) + 1``; ``coarse_levels`` > 0 also sets ``coarse_capacities`` for that many
    parent levels (1 for the SLat flow models).
    """
    coords, feats = np.asarray(coords), np.asarray(feats)
    if coords.ndim != 2 or coords.shape[1] != 4 or feats.ndim != 2 or feats.shape[0] != coords.shape[0]:
      raise ValueError(f"SparseTensor.from_packed: expected coords [N, 4] and feats [N, C], "
                       f"got {coords.shape} and {feats.shape}")
    n = coords.shape[0]
    if n and np.any(np.diff(coords[:, 0]) < 0):
      raise ValueError("SparseTensor.from_packed: rows must be grouped by batch index in increasing order")
    batch_size = batch_size if batch_size is not None else (int(coords[:, 0].max()) + 1 if n else 1)
    capacity = capacity if capacity is not None else bucket_capacity(n)
    if capacity < n:
      raise ValueError(f"SparseTensor.from_packed: capacity {capacity} < {n} rows")
    pad = capacity - n
    mask = np.arange(capacity) < n
    coords = np.pad(coords.astype(np.int32), ((0, pad), (0, 0)))
    return cls(coords=jnp.asarray(coords), feats=jnp.asarray(np.pad(feats, ((0, pad), (0, 0)))),
               mask=jnp.asarray(mask), batch_size=batch_size,
               coarse_capacities=coarse_capacities(coords, mask, coarse_levels))

  def to_packed(self) -> tuple[np.ndarray, np.ndarray]:
    """-> (coords [N, 4] int32, feats [N, C]) with padding removed, rows in their order (host side)."""
    mask = np.asarray(self.mask)
    return np.asarray(self.coords)[mask], np.asarray(self.feats)[mask]

  @property
  def capacity(self) -> int:
    return self.feats.shape[0]

  @property
  def segment_ids(self) -> jax.Array:
    """[cap] int32 sample index of each row, -1 on padding."""
    return jnp.where(self.mask, self.coords[:, 0], -1)

  def replace_feats(self, feats: jax.Array) -> "SparseTensor":
    return self.replace(feats=feats)


@flax.struct.dataclass
class SparseShards:
  """A batch's per-device SparseTensors stacked on leading axes (docs/design.md, Sparse tensors).

  coords [..., D, cap, 4] int32, feats [..., D, cap, C], mask [..., D, cap] bool: device d's rows as
  ``SparseTensor(coords[d], feats[d], mask[d], batch_size)``; leading axes (micro-batches) allowed.
  ``coarse_capacities`` is static, common to all of them (one compiled program per value), so the
  model's coarse levels, and the attention over them, run at their own size instead of ``cap``.
  """
  coords: jax.Array
  feats: jax.Array
  mask: jax.Array
  batch_size: int = flax.struct.field(pytree_node=False)
  coarse_capacities: tuple[int, ...] = flax.struct.field(pytree_node=False, default=())
