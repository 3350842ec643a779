"""Neighbour lookup of active voxels inside ``jax.jit``: sort + binary search, never a dense grid.

Each active site gets an integer key ``((b R + x) R + y) R + z`` (lexicographic in (b, x, y, z));
padding rows get the sentinel ``B R^3``, larger than any real key. A site's 27 neighbours are found
by binary search of their keys in the sorted keys: memory and time grow with the number of rows
(capacity), not with the resolution R.
"""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np

# The 27 offsets of a 3x3x3 kernel in (a, b, c) row-major order: column k = 9a + 3b + c holds
# offset (a - 1, b - 1, c - 1), as TRELLIS's sparse-conv weight W[:, a, b, c, :].
OFFSETS = np.array(list(itertools.product((-1, 0, 1), repeat=3)), np.int32)  # [27, 3]


def check_key_range(resolution: int, batch_size: int):
  """Keys are int32: ``batch_size * resolution^3`` must stay below 2^31."""
  if batch_size * resolution ** 3 >= 2 ** 31:
    raise ValueError(f"sparse grid keys overflow int32: batch_size {batch_size} x resolution "
                     f"{resolution}^3 >= 2^31")


def _pack(b: jax.Array, xyz: jax.Array, r: int) -> jax.Array:
  return ((b * r + xyz[..., 0]) * r + xyz[..., 1]) * r + xyz[..., 2]


def grid_keys(coords: jax.Array, mask: jax.Array, resolution: int, batch_size: int) -> jax.Array:
  """coords [cap, 4] int32 (b, x, y, z in [0, R)), mask [cap] -> keys [cap] int32 (sentinel on padding)."""
  check_key_range(resolution, batch_size)
  return jnp.where(mask, _pack(coords[:, 0], coords[:, 1:], resolution), batch_size * resolution ** 3)


def decode_keys(keys: jax.Array, resolution: int) -> jax.Array:
  """Inverse of :func:`grid_keys` on real keys: [n] int32 -> coords [n, 4] int32."""
  r = resolution
  return jnp.stack([keys // r ** 3, keys // r ** 2 % r, keys // r % r, keys % r], axis=-1)


def neighbour_table(coords: jax.Array, mask: jax.Array, *, resolution: int, batch_size: int) -> jax.Array:
  """Row index of each site's 27 neighbours -> [cap, 27] int32; ``cap`` (out of range) where absent.

  Column k is offset ``OFFSETS[k]``. A neighbour is absent if it is outside [0, R)^3, inactive, in
  another sample, or if the site itself is padding. The centre column (13) is the row itself.
  """
  cap = coords.shape[0]
  keys = grid_keys(coords, mask, resolution, batch_size)
  order = jnp.argsort(keys).astype(jnp.int32)
  sorted_keys = keys[order]
  nbr = coords[:, None, 1:] + jnp.asarray(OFFSETS)[None]                    # [cap, 27, 3]
  inside = jnp.all((nbr >= 0) & (nbr < resolution), axis=-1) & mask[:, None]
  query = _pack(coords[:, :1], nbr, resolution)                              # [cap, 27]
  pos = jnp.clip(jnp.searchsorted(sorted_keys, query), 0, cap - 1).astype(jnp.int32)
  found = inside & (sorted_keys[pos] == query)
  return jnp.where(found, order[pos], cap)
