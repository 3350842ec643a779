"""2x down-sampling of sparse voxels to their parents, and the matching up-sampling (README section 3.4/3.7).

Parents are ``(b, x//2, y//2, z//2)``; the unique parents are sorted lexicographically by
(b, x, y, z), so each sample's parents are contiguous, real rows first and padding last. A parent's
value is ``sum(children) / (count + 1)``: TRELLIS averages onto zeros with the zero included.
Up-sampling copies each parent's value back to its children, in the fine rows' own order.
:func:`subdivide` is the other way up: every voxel split into its 8 children (the SLat mesh decoder).
"""
from __future__ import annotations

import itertools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from mdt_jax.sparse.neighbours import decode_keys, grid_keys
from mdt_jax.sparse.tensor import SparseTensor


@flax.struct.dataclass
class Downsampling:
  """A fine level, its 2x parent level, and the map between their rows.

  fine_coords [cap_f, 4] / fine_mask [cap_f]; coarse_coords [cap_c, 4] / coarse_mask [cap_c]
  (padding rows: coords 0, mask False); ``parent`` [cap_f] int32: the coarse row of each fine row
  (``cap_c``, out of range, on padding); ``count`` [cap_c] float32 children per parent;
  ``overflow`` [] bool: the parents did not fit in ``cap_c`` rows (results are then invalid).
  """
  fine_coords: jax.Array
  fine_mask: jax.Array
  coarse_coords: jax.Array
  coarse_mask: jax.Array
  parent: jax.Array
  count: jax.Array
  overflow: jax.Array
  batch_size: int = flax.struct.field(pytree_node=False)

  def pool(self, x: SparseTensor) -> SparseTensor:
    """Fine tensor -> parent tensor with ``sum(children) / (count + 1)``, summed in float32."""
    cap_c = self.coarse_mask.shape[0]
    sums = jax.ops.segment_sum(x.feats.astype(jnp.float32), self.parent, num_segments=cap_c)
    feats = (sums / (self.count + 1.0)[:, None]).astype(x.feats.dtype)
    return SparseTensor(coords=self.coarse_coords, feats=feats, mask=self.coarse_mask, batch_size=self.batch_size)

  def unpool(self, x: SparseTensor) -> SparseTensor:
    """Parent tensor -> fine tensor: each fine row copies its parent's features (0 on padding)."""
    feats = x.feats.at[self.parent].get(mode="fill", fill_value=0)
    return SparseTensor(coords=self.fine_coords, feats=feats, mask=self.fine_mask, batch_size=self.batch_size)


def downsampling(coords: jax.Array, mask: jax.Array, *, resolution: int, batch_size: int,
                 capacity: int | None = None) -> Downsampling:
  """The parent level of the sites ``coords`` [cap, 4] (x, y, z in [0, resolution)), ``mask`` [cap],
  with ``capacity`` rows (default: cap).

  Runs inside jit: one sort of the parents' keys, a cumulative sum for their ranks, scatters.
  """
  cap_f = coords.shape[0]
  cap_c = capacity or cap_f
  coarse_res, b = resolution // 2, batch_size
  keys = grid_keys(coords.at[:, 1:].set(coords[:, 1:] // 2), mask, coarse_res, b)
  order = jnp.argsort(keys).astype(jnp.int32)
  sorted_keys = keys[order]
  first = jnp.concatenate([jnp.ones((1,), bool), sorted_keys[1:] != sorted_keys[:-1]])
  rank = jnp.cumsum(first, dtype=jnp.int32) - 1                     # parent rank of each sorted row
  valid = mask[order]
  num_parents = jnp.sum(first & valid, dtype=jnp.int32)
  parent = jnp.zeros((cap_f,), jnp.int32).at[order].set(jnp.where(valid, rank, cap_c))
  parent_keys = jnp.zeros((cap_c,), jnp.int32).at[rank].set(sorted_keys, mode="drop")
  coarse_mask = jnp.arange(cap_c) < num_parents
  coarse_coords = jnp.where(coarse_mask[:, None], decode_keys(parent_keys, coarse_res), 0)
  count = jax.ops.segment_sum(jnp.ones((cap_f,), jnp.float32), parent, num_segments=cap_c)
  return Downsampling(fine_coords=coords, fine_mask=mask, coarse_coords=coarse_coords,
                      coarse_mask=coarse_mask, parent=parent, count=count,
                      overflow=num_parents > cap_c, batch_size=b)


def subdivide(x: SparseTensor) -> SparseTensor:
  """Each voxel ``(b, x, y, z)`` -> its 8 children ``(b, 2x+i, 2y+j, 2z+k)`` at twice the resolution,
  features copied; rows parent-major, child ``(i, j, k)`` in the order 000, 001, 010, ..., 111 (k fastest):
  row ``8 n + c`` is child c of row n (decoder fixtures README, section 4). Capacity ``8 cap``; the
  children of a padding row are padding."""
  child = jnp.asarray(np.array(list(itertools.product((0, 1), repeat=3)), np.int32))    # [8, 3]
  coords = jnp.concatenate([jnp.broadcast_to(x.coords[:, None, :1], (x.capacity, 8, 1)),
                            2 * x.coords[:, None, 1:] + child[None]], axis=-1)
  mask = jnp.repeat(x.mask, 8)
  coords = jnp.where(mask[:, None], coords.reshape(-1, 4), 0)
  return SparseTensor(coords=coords, feats=jnp.repeat(x.feats, 8, axis=0), mask=mask, batch_size=x.batch_size)
