"""Variable-size sparse instances -> per-device padded arrays, laid out as docs/design.md, Sparse tensors, says.

A host's share of a batch is D devices x n instances. Device d holds instances d*n .. d*n + n - 1,
their rows contiguous and in input order, each row `(local batch index, x, y, z)`, then padding up to
one capacity common to every device of every host:
  coords int32 [D, cap, 4]   (b, x, y, z); padding rows 0
  feats         [D, cap, C]  padding rows 0
  mask     bool [D, cap]     False on padding rows
so `mdt_jax.sparse.SparseTensor(coords[d], feats[d], mask[d], batch_size=n)` is device d's tensor.
The capacity is `bucket_capacity(max over all devices of their voxel total)`; all hosts compute it
from the whole global batch's voxel counts (`voxel_counts`, stored by the builders), so they agree
without communicating.
"""
import numpy as np

# Key of the per-split, per-record voxel counts in a builder's `info.metadata`.
VOXEL_COUNTS_METADATA = "num_voxels"


def voxel_counts(builder, split):
  """Voxel count of every record of `split`, in record order: int64 [len(split)]."""
  by_split = builder.info.metadata.get(VOXEL_COUNTS_METADATA, {})
  if split not in by_split:
    raise KeyError(f"{builder.name}: no voxel counts for split {split!r} in the dataset metadata "
                   f"({builder.data_dir}); rebuild it with this version of mdt_jax.data")
  return np.asarray(by_split[split], np.int64)


def default_capacity(n):
  """`mdt_jax.sparse.bucket_capacity(n)`: the one place capacities come from (imported lazily)."""
  from mdt_jax.sparse import bucket_capacity  # pylint: disable=g-import-not-at-top
  return bucket_capacity(n)


def batch_capacity(global_counts, instances_per_device, capacity_fn=default_capacity):
  """Common capacity for a global batch whose instances have `global_counts` voxels, in order.

  Instances are grouped n = instances_per_device at a time into devices (every host, every device).
  """
  per_device = np.asarray(global_counts).reshape(-1, instances_per_device).sum(1)
  capacity = int(capacity_fn(int(per_device.max())))
  if capacity < per_device.max():
    raise ValueError(f"capacity {capacity} is below a device's {per_device.max()} voxels")
  return capacity


def pack_devices(coords, feats, devices, capacity):
  """Packs D * n instances into padded per-device arrays.

  Args:
    coords: list of D * n int arrays [N_i, 3] (x, y, z).
    feats: list of D * n arrays [N_i, C], one dtype.
    devices: D; instance i goes to device i // n with local batch index i % n.
    capacity: rows per device (>= every device's voxel total).
  Returns:
    {"coords": int32 [D, cap, 4], "feats": [D, cap, C], "mask": bool [D, cap]}.
  """
  if len(coords) != len(feats) or len(coords) % devices:
    raise ValueError(f"{len(coords)} coords / {len(feats)} feats arrays for {devices} devices")
  n = len(coords) // devices
  channels = feats[0].shape[1]
  out_coords = np.zeros((devices, capacity, 4), np.int32)
  out_feats = np.zeros((devices, capacity, channels), feats[0].dtype)
  mask = np.zeros((devices, capacity), bool)
  for d in range(devices):
    row = 0
    for b in range(n):
      c, f = coords[d * n + b], feats[d * n + b]
      if row + len(c) > capacity:
        raise ValueError(f"device {d} needs more than its capacity of {capacity} rows")
      out_coords[d, row:row + len(c), 0] = b
      out_coords[d, row:row + len(c), 1:] = c
      out_feats[d, row:row + len(c)] = f
      mask[d, row:row + len(c)] = True
      row += len(c)
  return {"coords": out_coords, "feats": out_feats, "mask": mask}


def padding_fraction(mask):
  """Fraction of rows that are padding."""
  mask = np.asarray(mask)
  return 1.0 - float(mask.sum()) / mask.size
