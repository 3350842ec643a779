"""Toy conditions: family x size bucket, each given to the models as a fixed token sequence.

`cond_id = family * NUM_SIZE_BUCKETS + size_bucket`. The token table `float32 [NUM_CONDITIONS, L, C]`
is standard-normal from numpy's legacy `RandomState(seed)`, whose stream numpy keeps frozen across
versions, so a (seed, L, C) triple names the same table forever (`table_checksum` pins it).
"""
import functools
import hashlib

import numpy as np

from mdt_jax.data.toy_shapes import FAMILIES, SIZE_BUCKETS

NUM_FAMILIES = len(FAMILIES)
NUM_SIZE_BUCKETS = len(SIZE_BUCKETS)
NUM_CONDITIONS = NUM_FAMILIES * NUM_SIZE_BUCKETS
DEFAULT_NUM_TOKENS = 4
DEFAULT_CHANNELS = 64
DEFAULT_TABLE_SEED = 0


def condition_id(family, size_bucket):
  """`family * NUM_SIZE_BUCKETS + size_bucket` (ints or int arrays)."""
  return np.asarray(family) * NUM_SIZE_BUCKETS + np.asarray(size_bucket)


def split_condition(cond_id):
  """Inverse of `condition_id`: `(family, size_bucket)`."""
  return np.divmod(np.asarray(cond_id), NUM_SIZE_BUCKETS)


@functools.lru_cache(maxsize=None)
def _table(num_tokens, channels, seed):
  table = np.random.RandomState(seed).standard_normal((NUM_CONDITIONS, num_tokens, channels))
  table = table.astype(np.float32)
  table.flags.writeable = False
  return table


def condition_table(num_tokens=DEFAULT_NUM_TOKENS, channels=DEFAULT_CHANNELS, seed=DEFAULT_TABLE_SEED):
  """The read-only token table `float32 [NUM_CONDITIONS, num_tokens, channels]`."""
  return _table(int(num_tokens), int(channels), int(seed))


def condition_tokens(cond_id, num_tokens=DEFAULT_NUM_TOKENS, channels=DEFAULT_CHANNELS,
                     seed=DEFAULT_TABLE_SEED):
  """Tokens of `cond_id` (int or int array [...]): `float32 [..., num_tokens, channels]`."""
  cond_id = np.asarray(cond_id)
  if np.any((cond_id < 0) | (cond_id >= NUM_CONDITIONS)):
    raise ValueError(f"condition id out of range [0, {NUM_CONDITIONS}): {cond_id}")
  return condition_table(num_tokens, channels, seed)[cond_id]


def table_checksum(num_tokens=DEFAULT_NUM_TOKENS, channels=DEFAULT_CHANNELS, seed=DEFAULT_TABLE_SEED):
  """sha256 hex digest of the table's float32 little-endian bytes."""
  table = condition_table(num_tokens, channels, seed)
  return hashlib.sha256(table.astype("<f4").tobytes()).hexdigest()
