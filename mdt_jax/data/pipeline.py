"""Sharded, shuffled, deterministic and resumable batches over a random-access source.

`source` is anything with `len()` and `source[i] -> record` (a TFDS data source:
`builder.as_data_source()[split]`). The order of records:
  * every epoch is a fresh permutation of all records (grain's index shuffle, seeded seed + epoch);
  * the permuted stream is cut into global batches of G = process_count x devices_per_host x
    instances_per_device records, which run on across epoch boundaries;
  * host h takes the h-th contiguous block of each global batch, so the hosts are disjoint and
    together see each record once per epoch.
Every record is turned into an example by `decode(record, rng)` with
`rng = np.random.default_rng([seed, position in the stream])`, so random choices (a condition view)
depend on the seed and the position alone, not on the host layout or on threads.

Resuming: `it.get_state()` is `{"next_index": k}` (JSON, equal on every host); save it with the
training checkpoint and call `set_state` on a fresh iterator built with the same arguments to get
exactly the batches the uninterrupted iterator would have yielded.
"""
import dataclasses
import sys

import grain
import numpy as np

from mdt_jax.data import sparse_batch


@dataclasses.dataclass(frozen=True)
class HostLayout:
  """Who gets what: n instances per device, D devices on this host, this host among P."""
  instances_per_device: int
  devices_per_host: int = 1
  process_index: int = 0
  process_count: int = 1

  def __post_init__(self):
    if not 0 <= self.process_index < self.process_count:
      raise ValueError(f"process_index {self.process_index} not in [0, {self.process_count})")
    if self.instances_per_device < 1 or self.devices_per_host < 1:
      raise ValueError(f"need >= 1 instance per device and device per host: {self}")

  @property
  def host_batch(self):
    return self.instances_per_device * self.devices_per_host

  @property
  def global_batch(self):
    return self.host_batch * self.process_count


def global_batch_order(num_records, seed, global_batch):
  """Record indices of global batch k, `int64 [global_batch]`, as an endless `grain.MapDataset`."""
  if num_records < 1:
    raise ValueError("the source has no records")
  # A finite but practically endless number of epochs: grain's batch(1) of an endless (sys.maxsize
  # long) dataset overflows its length; the order is the same as repeat()'s.
  epochs = (sys.maxsize // 2) // num_records
  return grain.MapDataset.range(num_records).shuffle(seed=seed).repeat(epochs).batch(global_batch)


def dense_collate(examples, global_indices):
  """Stacks each key of the host's examples: `[host_batch, ...]` (strings become numpy str arrays)."""
  del global_indices  # dense batches have a fixed shape
  return {key: np.stack([e[key] for e in examples]) for key in examples[0]}


@dataclasses.dataclass(frozen=True)
class SparseCollate:
  """Packs examples holding `coords [N, 3]` and `feats [N, C]` as sparse_batch lays out.

  Returns `{"x0": {"coords" [D, cap, 4], "feats" [D, cap, C], "mask" [D, cap]}, "num_voxels":
  int32 [host_batch], <other keys stacked>}`. `counts` are the source's per-record voxel counts
  (sparse_batch.voxel_counts); every example is checked against its count.
  """
  counts: np.ndarray
  layout: HostLayout
  capacity_fn: object = sparse_batch.default_capacity

  def __call__(self, examples, global_indices):
    counts = self.counts[global_indices]
    capacity = sparse_batch.batch_capacity(counts, self.layout.instances_per_device,
                                           self.capacity_fn)
    mine = _host_block(counts, self.layout)
    for example, index, expected in zip(examples, _host_block(global_indices, self.layout), mine):
      if len(example["coords"]) != expected:
        raise ValueError(f"record {index} ({example.get('sha256', 'no sha256')}) has "
                         f"{len(example['coords'])} voxels but the metadata says {expected}")
    x0 = sparse_batch.pack_devices([e["coords"] for e in examples], [e["feats"] for e in examples],
                                   self.layout.devices_per_host, capacity)
    rest = dense_collate([{k: v for k, v in e.items() if k not in ("coords", "feats")}
                          for e in examples], None)
    return {"x0": x0, "num_voxels": mine.astype(np.int32), **rest}


def _host_block(global_array, layout):
  start = layout.process_index * layout.host_batch
  return global_array[start:start + layout.host_batch]


@dataclasses.dataclass(frozen=True)
class _HostBatch:
  source: object
  decode: object
  layout: HostLayout
  seed: int
  collate: object

  def __call__(self, step, global_indices):
    first = step * self.layout.global_batch + self.layout.process_index * self.layout.host_batch
    indices = [int(i) for i in _host_block(global_indices, self.layout)]
    # A TFDS data source reads a list of records faster than one at a time.
    getitems = getattr(self.source, "__getitems__", None)
    records = getitems(indices) if getitems else [self.source[i] for i in indices]
    examples = [self.decode(record, np.random.default_rng([self.seed, first + j]))
                for j, record in enumerate(records)]
    return self.collate(examples, global_indices)


def host_batches(source, decode, layout, *, seed, collate=dense_collate):
  """This host's batches as an infinite `grain.MapDataset` (batch k is `ds[k]`)."""
  order = global_batch_order(len(source), seed, layout.global_batch)
  return order.map_with_index(_HostBatch(source, decode, layout, seed, collate))


def batch_iterator(source, decode, layout, *, seed, collate=dense_collate, num_threads=2,
                   prefetch=4):
  """A resumable iterator over `host_batches`, read ahead by `num_threads` threads.

  `get_state()` / `set_state(state)` save and restore the position (see the module docstring).
  """
  ds = host_batches(source, decode, layout, seed=seed, collate=collate)
  options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
  return iter(ds.to_iter_dataset(options))
