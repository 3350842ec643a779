"""A triangle mesh from the SLat mesh decoder's output, by dual contouring (surface nets) of its signed
distance field; numpy, on the host.

Upstream meshes this output with FlexiCubes (NVIDIA source licence; not ported). What is the same: the
grid (the decoder's output cells at ``grid_resolution`` = 4 x the latent resolution, in the unit cube
``[-0.5, 0.5]^3``), the per-corner SDF (shifted by ``-1 / grid_resolution`` as upstream shifts it), the
per-corner deformation ``tanh(deform) (1 - 1e-8) / (2 grid_resolution)`` (at most half a cell), and
per-corner colours. Values of a corner shared by several cells are averaged. What differs: one vertex per
cell that the surface crosses, at the mean of its edges' zero crossings (linear interpolation between the
deformed corners) instead of FlexiCubes' weighted dual vertices; the 21 FlexiCubes weights (beta, alpha,
gamma) are not used; each crossed grid edge whose four cells are all present gives one quad (two
triangles), so the mesh is closed wherever the surface stays inside the decoded cells, and ambiguous cells
are not split (one vertex, where FlexiCubes may place two). Colours are interpolated like positions.

Output channels per cell (:data:`LAYOUT`): ``sdf`` (8,), ``deform`` (8, 3), ``weights`` (21,), and with
colour ``color`` (8, 6), the first three channels taken as RGB. Corner c of a cell at (x, y, z) is
``(x, y, z) + CORNERS[c]`` (x fastest), the cube-corner order this assumes for the decoder's channels.
"""
from __future__ import annotations

import numpy as np

LAYOUT = {"sdf": (0, 8), "deform": (8, 32), "weights": (32, 53), "color": (53, 101)}
CORNERS = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], np.int64)
# The 12 cube edges as (corner a, corner b, axis) with b = a + e_axis.
EDGES = np.array([(a, b, int(np.argmax(CORNERS[b] - CORNERS[a]))) for a in range(8) for b in range(8)
                  if np.sum(CORNERS[b] - CORNERS[a]) == 1 and np.all(CORNERS[b] >= CORNERS[a])], np.int64)


def channels(use_color: bool) -> int:
  """Output channels per cell: 53, or 101 with colour."""
  return LAYOUT["color"][1] if use_color else LAYOUT["weights"][1]


def extract_mesh(coords: np.ndarray, feats: np.ndarray, *, grid_resolution: int, use_color: bool) -> dict:
  """One sample's cells -> its mesh.

  coords: [n, 4] int (b, x, y, z) cells of the ``grid_resolution`` grid (one sample); feats: [n, 53 or 101].
  Returns ``vertices`` [V, 3] float32 (in [-0.5, 0.5]^3), ``faces`` [F, 3] int32 (counter-clockwise seen
  from outside, where the SDF is positive), and with colour ``vertex_attrs`` [V, 6] and ``vertex_colors``
  [V, 3] (the first three attributes clipped to [0, 1]).
  """
  n = coords.shape[0]
  sdf = feats[:, slice(*LAYOUT["sdf"])].astype(np.float64) - 1.0 / grid_resolution
  deform = feats[:, slice(*LAYOUT["deform"])].reshape(n, 8, 3).astype(np.float64)
  attrs = feats[:, slice(*LAYOUT["color"])].reshape(n, 8, 6).astype(np.float64) if use_color else None
  return dual_contour(coords[:, 1:].astype(np.int64), sdf, deform, attrs, grid_resolution)


def dual_contour(cells: np.ndarray, sdf: np.ndarray, deform: np.ndarray, attrs, grid_resolution: int) -> dict:
  """cells [n, 3] int grid indices, per-corner sdf [n, 8], deform [n, 8, 3], attrs [n, 8, A] or None ->
  the mesh dict of :func:`extract_mesh` (see the module docstring for the method)."""
  g = grid_resolution
  corner_ijk = cells[:, None, :] + CORNERS[None]                                   # [n, 8, 3]
  corner_key = _key(corner_ijk, g + 1)
  keys, corner = np.unique(corner_key.reshape(-1), return_inverse=True)
  corner = corner.reshape(-1, 8)                                                    # [n, 8] unique corner ids
  m = len(keys)
  mean = lambda values: _corner_mean(corner, values, m)
  s = mean(sdf)[:, 0]
  ijk = np.stack([keys // (g + 1) ** 2, keys // (g + 1) % (g + 1), keys % (g + 1)], axis=1)
  pos = ijk / g - 0.5 + np.tanh(mean(deform)) * (1 - 1e-8) / (2 * g)
  attr = mean(attrs) if attrs is not None else None

  # Crossed edges, each once: (lower corner id, upper corner id, axis) of every cell, deduplicated.
  ea, eb = corner[:, EDGES[:, 0]], corner[:, EDGES[:, 1]]                         # [n, 12]
  crossed = (s[ea] < 0) != (s[eb] < 0)
  t = np.where(crossed, s[ea] / np.where(crossed, s[ea] - s[eb], 1.0), 0.0)
  point = pos[ea] + t[..., None] * (pos[eb] - pos[ea])                              # [n, 12, 3]
  count = crossed.sum(1)
  has_vertex = count > 0
  vertex_of_cell = np.cumsum(has_vertex) - 1
  w = crossed[..., None] / np.maximum(count, 1)[:, None, None]
  vertices = (w * point).sum(1)[has_vertex]
  out = {}
  if attr is not None:
    vattr = (w * (attr[ea] + t[..., None] * (attr[eb] - attr[ea]))).sum(1)[has_vertex]
    out = {"vertex_attrs": vattr.astype(np.float32), "vertex_colors": np.clip(vattr[:, :3], 0, 1).astype(np.float32)}

  # One quad per crossed edge with all four cells present: cells L, L - e_u, L - e_u - e_v, L - e_v around
  # the edge from L along e_axis ((axis, u, v) cyclic), normal +e_axis; reversed where the SDF decreases.
  edge_key = ea * m + eb
  _, first = np.unique(edge_key[crossed], return_index=True)
  lower = ijk[ea[crossed][first]]
  axis = np.broadcast_to(EDGES[:, 2], ea.shape)[crossed][first]
  inward = s[ea[crossed][first]] < 0                                                # inside below: normal +e_axis
  cell_keys = _key(cells, g)
  order = np.argsort(cell_keys)
  eye = np.eye(3, dtype=np.int64)
  u, v = eye[(axis + 1) % 3], eye[(axis + 2) % 3]
  ring = np.stack([lower, lower - u, lower - u - v, lower - v], axis=1)             # [e, 4, 3]
  inside_grid = np.all((ring >= 0) & (ring < g), axis=-1)
  ring_key = _key(np.clip(ring, 0, g - 1), g)
  pos_in_sorted = np.clip(np.searchsorted(cell_keys[order], ring_key), 0, len(order) - 1)
  found = inside_grid & (cell_keys[order][pos_in_sorted] == ring_key)
  ring_cell = order[pos_in_sorted]
  complete = np.all(found, axis=1) & np.all(has_vertex[ring_cell], axis=1)
  quads = vertex_of_cell[ring_cell[complete]]
  quads = np.where(inward[complete][:, None], quads, quads[:, ::-1])
  faces = np.concatenate([quads[:, [0, 1, 2]], quads[:, [0, 2, 3]]]).astype(np.int32)
  return {"vertices": vertices.astype(np.float32), "faces": faces, **out}


def _corner_mean(corner: np.ndarray, values: np.ndarray, m: int) -> np.ndarray:
  """Per-cell corner values [n, 8, ...] -> [m, k] means over the cells sharing each of the m corners."""
  flat = values.reshape(corner.size, -1)
  ids = corner.reshape(-1)
  total = np.stack([np.bincount(ids, flat[:, j], minlength=m) for j in range(flat.shape[1])], axis=1)
  return total / np.bincount(ids, minlength=m)[:, None]


def _key(ijk: np.ndarray, size: int) -> np.ndarray:
  """[..., 3] int grid indices -> int64 keys ``(i size + j) size + k``."""
  return (ijk[..., 0] * size + ijk[..., 1]) * size + ijk[..., 2]
