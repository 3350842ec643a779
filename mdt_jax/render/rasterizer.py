"""A tiled 3D Gaussian splatting rasterizer in JAX: TRELLIS's renderer (mip-splatting's forward kernel, 2D
filter 0.1 px^2) on any backend, differentiable with respect to the Gaussians (decoder fixtures README,
section 5; design: docs/rasterizer.md).

Per view: project every Gaussian (EWA, near cull at z 0.2, 2D filter with opacity compensation, 3-sigma
radius, 16 x 16 tile rectangle); emit one (tile, Gaussian) pair per touched tile into a static capacity,
Gaussians in depth order so that a stable sort by tile orders each tile's list by depth (ties by index);
cut each tile's list into work items of ``ITEM`` pairs; composite the items in groups, each item a
``[ITEM, 256 pixels]`` block, never a pixels x Gaussians array. The front-to-back compositing with its
early stop (a Gaussian is composited while ``T (1 - alpha) >= 1e-4``) is evaluated in closed form:
with ``T_k`` the running product of ``1 - alpha`` *without* the stop, Gaussian k is composited iff
``T_k >= 1e-4`` (the product only decreases), so each item needs only the product of the items before it in
its tile (a segmented scan over items) to composite its block on its own.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mdt_jax.sparse.tensor import bucket_capacity

TILE = 16
ITEM = 64                   # pairs per work item
GROUP = 64                  # work items composited together on CPU (a [GROUP, ITEM, 256] block)
KERNEL_SIZE = 0.1           # 2D filter variance, px^2 (TRELLIS's kernel_size)
NEAR_CULL = 0.2
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
MIN_CAPACITY = 1024


def pair_capacity(total: int) -> int:
  """The capacity bucket of ``total`` (tile, Gaussian) pairs: ``mdt_jax.sparse.bucket_capacity``'s ladder
  (2^k and 1.5 2^k), at least 1024."""
  return bucket_capacity(max(MIN_CAPACITY, int(total)))


def _quat_to_rotmat(q):
  """[n, 4] (w, x, y, z), not normalised (as the kernel) -> [n, 3, 3]."""
  w, x, y, z = (q[:, i] for i in range(4))
  return jnp.stack([
      jnp.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
      jnp.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
      jnp.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def project(xyz, scaling, rotation, opacity, valid, extrinsics, intrinsics, height: int, width: int):
  """One view's per-Gaussian screen quantities (README section 5, "Per Gaussian").

  xyz, scaling [n, 3], rotation [n, 4], opacity [n], valid [n] bool; extrinsics [4, 4] OpenCV world->camera;
  intrinsics [3, 3] normalised. Returns a dict: ``mean2d`` [n, 2] px (pixel (i, j) sampled at (i, j)),
  ``conic`` [n, 3], ``coef`` [n] (2D-filter opacity compensation), ``opacity`` [n] (times coef),
  ``radius`` [n], ``depth`` [n], ``rect`` [n, 4] int32 tile range (x0, y0, x1, y1), ``valid`` [n].
  """
  rot, trans = extrinsics[:3, :3], extrinsics[:3, 3]
  fx, fy = width * intrinsics[0, 0], height * intrinsics[1, 1]
  cx, cy = width * intrinsics[0, 2], height * intrinsics[1, 2]
  p = xyz @ rot.T + trans
  z = p[:, 2]
  in_front = z > NEAR_CULL
  zs = jnp.where(in_front, z, 1.0)
  mean2d = jnp.stack([fx * p[:, 0] / zs + cx - 0.5, fy * p[:, 1] / zs + cy - 0.5], -1)
  r_q = _quat_to_rotmat(rotation)
  m = r_q * scaling[:, None, :]                                            # R_q S
  cov3d = m @ jnp.swapaxes(m, 1, 2)
  lim_x, lim_y = 1.3 * 0.5 / intrinsics[0, 0], 1.3 * 0.5 / intrinsics[1, 1]   # 1.3 tan(fov / 2)
  u = jnp.clip(p[:, 0] / zs, -lim_x, lim_x)
  v = jnp.clip(p[:, 1] / zs, -lim_y, lim_y)
  zero = jnp.zeros_like(zs)
  jac = jnp.stack([jnp.stack([fx / zs, zero, -fx * u / zs], -1), jnp.stack([zero, fy / zs, -fy * v / zs], -1)], -2)
  t = jac @ rot[None]                                                      # J W, [n, 2, 3]
  cov2d = t @ cov3d @ jnp.swapaxes(t, 1, 2)
  a, b, c = cov2d[:, 0, 0], cov2d[:, 0, 1], cov2d[:, 1, 1]
  det0_raw = a * c - b * b
  a, c = a + KERNEL_SIZE, c + KERNEL_SIZE
  det1_raw = a * c - b * b
  clamped = (det0_raw < 1e-6) | (det1_raw < 1e-6)
  det0, det1 = jnp.maximum(det0_raw, 1e-6), jnp.maximum(det1_raw, 1e-6)
  coef = jnp.where(clamped, 0.0, jnp.sqrt(det0 / (det1 + 1e-6) + 1e-6))
  conic = jnp.stack([c, -b, a], -1) / det1[:, None]
  mid = 0.5 * (a + c)
  lam = mid + jnp.sqrt(jnp.maximum(0.1, mid * mid - det1))
  radius = jnp.ceil(3.0 * jnp.sqrt(lam))
  tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
  rect_lo = jnp.trunc((mean2d - radius[:, None]) / TILE)
  rect_hi = jnp.trunc((mean2d + radius[:, None] + TILE - 1) / TILE)
  limit = jnp.array([tiles_x, tiles_y], jnp.float32)
  rect_lo = jax.lax.stop_gradient(jnp.clip(rect_lo, 0, limit)).astype(jnp.int32)
  rect_hi = jax.lax.stop_gradient(jnp.clip(rect_hi, 0, limit)).astype(jnp.int32)
  area = jnp.prod(rect_hi - rect_lo, -1)
  keep = valid & in_front & ~clamped & (area > 0)
  return {"mean2d": mean2d, "conic": conic, "coef": coef, "opacity": opacity * coef, "radius": radius,
          "depth": z, "rect": jnp.concatenate([rect_lo, rect_hi], -1), "valid": keep}


def count_pairs(proj) -> jax.Array:
  """[] int32 number of (tile, Gaussian) pairs of a projected view."""
  rect = proj["rect"]
  return jnp.sum(jnp.where(proj["valid"], (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1]), 0))


def _pairs(proj, capacity: int, num_tiles: int, tiles_x: int):
  """-> (tile [K] int32 sorted, Gaussian [K] int32: each tile's list in depth order (ties by index); slots
  past the last pair have tile ``num_tiles``), and the number of pairs."""
  n = proj["depth"].shape[0]
  depth = jax.lax.stop_gradient(jnp.where(proj["valid"], proj["depth"], jnp.inf))
  order = jnp.argsort(depth, stable=True).astype(jnp.int32)
  rect = proj["rect"][order]
  width = rect[:, 2] - rect[:, 0]
  counts = jnp.where(proj["valid"][order], width * (rect[:, 3] - rect[:, 1]), 0)
  ends = jnp.cumsum(counts)
  total = ends[-1]
  slot = jnp.arange(capacity, dtype=jnp.int32)
  rank = jnp.repeat(jnp.arange(n, dtype=jnp.int32), counts, total_repeat_length=capacity)
  local = slot - (ends - counts)[rank]
  w = jnp.maximum(width[rank], 1)
  tile = (rect[rank, 1] + local // w) * tiles_x + rect[rank, 0] + local % w
  tile = jnp.where(slot < total, tile, num_tiles)
  tile, gaussian = jax.lax.sort((tile, order[rank]), num_keys=1, is_stable=True)
  return tile, gaussian, total


def _items(tile_sorted, num_tiles: int, num_items: int):
  """Work items: each tile's list cut into runs of ITEM pairs. -> (item tile [I] int32 (``num_tiles`` on
  padding items), first pair [I] int32, end of the tile's list [I] int32)."""
  bounds = jnp.searchsorted(tile_sorted, jnp.arange(num_tiles + 1, dtype=jnp.int32)).astype(jnp.int32)
  start, end = bounds[:-1], bounds[1:]
  per_tile = (end - start + ITEM - 1) // ITEM
  first_item = jnp.cumsum(per_tile) - per_tile
  tiles = jnp.arange(num_tiles, dtype=jnp.int32)
  item_tile = jnp.repeat(tiles, per_tile, total_repeat_length=num_items)
  item = jnp.arange(num_items, dtype=jnp.int32)
  real = item < jnp.sum(per_tile)
  item_tile = jnp.where(real, item_tile, num_tiles)
  t = jnp.minimum(item_tile, num_tiles - 1)
  first = start[t] + (item - first_item[t]) * ITEM
  return item_tile, jnp.where(real, first, 0), jnp.where(real, end[t], 0)


def _alphas(proj, gaussian_sorted, item_tile, first, end, tiles_x: int):
  """[G, ITEM, 256] effective alphas of a group of items (0 where skipped) and their Gaussians [G, ITEM]."""
  idx = first[:, None] + jnp.arange(ITEM, dtype=jnp.int32)[None]
  inside = idx < end[:, None]
  g = jnp.where(inside, gaussian_sorted.at[idx].get(mode="fill", fill_value=0), 0)
  ly, lx = jnp.divmod(jnp.arange(TILE * TILE, dtype=jnp.int32), TILE)
  px = (item_tile % tiles_x * TILE)[:, None] + lx[None]                    # [G, 256]
  py = (item_tile // tiles_x * TILE)[:, None] + ly[None]
  mean, conic = proj["mean2d"][g], proj["conic"][g]                        # [G, ITEM, 2 | 3]
  dx = mean[..., 0:1] - px[:, None, :].astype(jnp.float32)
  dy = mean[..., 1:2] - py[:, None, :].astype(jnp.float32)
  power = -0.5 * (conic[..., 0:1] * dx * dx + conic[..., 2:3] * dy * dy) - conic[..., 1:2] * dx * dy
  alpha = jnp.minimum(ALPHA_MAX, proj["opacity"][g][..., None] * jnp.exp(jnp.minimum(power, 0.0)))
  keep = inside[..., None] & (power <= 0) & (alpha >= ALPHA_MIN)
  return jnp.where(keep, alpha, 0.0), g


def _segment_exclusive_product(values, segment):
  """values [I, P] (P pixels), segment [I] sorted ids -> per row the product of the earlier rows of its
  segment (1 for the first row of a segment)."""
  starts = jnp.concatenate([jnp.ones((1,), bool), segment[1:] != segment[:-1]])

  def combine(left, right):
    (lv, ls), (rv, rs) = left, right
    return jnp.where(rs[:, None], rv, lv * rv), ls | rs

  incl, _ = jax.lax.associative_scan(combine, (values, starts), axis=0)
  shifted = jnp.concatenate([jnp.ones_like(values[:1]), incl[:-1]])
  return jnp.where(starts[:, None], 1.0, shifted)


def group_size() -> int:
  """Work items composited together: small blocks on CPU (cache-sized, dead groups skipped), large ones on
  accelerators (fewer sequential steps)."""
  return GROUP if jax.default_backend() == "cpu" else 16 * GROUP


def _render_view(xyz, scaling, rotation, opacity, color, valid, extrinsics, intrinsics, bg, *, height: int,
                 width: int, capacity: int):
  """One view -> (rgb [H, W, 3], alpha [H, W]); NaN if its pairs overflow ``capacity``.

  Two passes over groups of work items: the transmittance through each item (no stop), then, with each
  item's incoming transmittance from a segmented scan over the items of its tile, the compositing, a
  sequential scan over the items' pairs; a group whose pixels are all below 1e-4 already is skipped.
  """
  tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
  num_tiles = tiles_x * tiles_y
  group = group_size()
  num_items = -(-(capacity // ITEM + num_tiles) // group) * group
  proj = project(xyz, scaling, rotation, opacity, valid, extrinsics, intrinsics, height, width)
  tile_sorted, gaussian_sorted, total = _pairs(proj, capacity, num_tiles, tiles_x)
  item_tile, first, end = _items(tile_sorted, num_tiles, num_items)
  groups = lambda a: a.reshape(num_items // group, group, *a.shape[1:])
  item_args = (groups(item_tile), groups(first), groups(end))

  def transmittance(item):                                                  # [G, 256] product of (1 - alpha)
    def run(_):
      return jnp.prod(1.0 - _alphas(proj, gaussian_sorted, *item, tiles_x)[0], axis=1)
    skip = lambda _: jnp.ones((group, TILE * TILE), jnp.float32)
    return jax.lax.cond(jnp.any(item[0] < num_tiles), run, skip, None)

  through = jax.lax.map(jax.checkpoint(transmittance), item_args).reshape(num_items, TILE * TILE)
  t_in = _segment_exclusive_product(through, item_tile)                   # T before each item, no stop

  def composite(args):
    *item, t0 = args

    def run(_):
      alpha, g = _alphas(proj, gaussian_sorted, *item, tiles_x)

      def step(carry, xs):                                                   # the items' k-th pairs, in parallel
        t, kept, rgb = carry                                                 # t: no stop; kept: the stopped T
        a, c = xs                                                            # [G, 256], [G, 3]
        t_next = t * (1.0 - a)
        used = (a > 0) & (t_next >= T_MIN)
        rgb = rgb + jnp.where(used, a * t, 0.0)[..., None] * c[:, None, :]
        return (t_next, jnp.where(used, kept * (1.0 - a), kept), rgb), None

      init = (t0, jnp.ones_like(t0), jnp.zeros(t0.shape + (3,), jnp.float32))
      (_, kept, rgb), _ = jax.lax.scan(step, init, (jnp.swapaxes(alpha, 0, 1), jnp.swapaxes(color[g], 0, 1)))
      return rgb, jnp.log(kept)

    def skip(_):
      return jnp.zeros((group, TILE * TILE, 3), jnp.float32), jnp.zeros((group, TILE * TILE), jnp.float32)

    live = jnp.any((item[0] < num_tiles)[:, None] & (t0 >= T_MIN))
    return jax.lax.cond(live, run, skip, None)

  rgb_item, kept = jax.lax.map(jax.checkpoint(composite), item_args + (groups(t_in),))
  rgb_item, kept = rgb_item.reshape(num_items, TILE * TILE, 3), kept.reshape(num_items, TILE * TILE)
  rgb_tile = jax.ops.segment_sum(rgb_item, item_tile, num_segments=num_tiles)
  t_tile = jnp.exp(jax.ops.segment_sum(kept, item_tile, num_segments=num_tiles))
  image = lambda a: a.reshape(tiles_y, tiles_x, TILE, TILE, *a.shape[2:]).swapaxes(1, 2).reshape(
      tiles_y * TILE, tiles_x * TILE, *a.shape[2:])[:height, :width]
  t_img = image(t_tile)
  rgb = image(rgb_tile) + t_img[..., None] * bg
  overflow = total > capacity
  return jnp.where(overflow, jnp.nan, rgb), jnp.where(overflow, jnp.nan, 1.0 - t_img)


@functools.partial(jax.jit, static_argnames=("height", "width", "capacity"))
def _render_views(xyz, scaling, rotation, opacity, color, valid, extrinsics, intrinsics, bg, *, height, width,
                  capacity):
  one = lambda cams: _render_view(xyz, scaling, rotation, opacity, color, valid, *cams, bg, height=height,
                                  width=width, capacity=capacity)
  return jax.lax.map(one, (extrinsics, intrinsics))


@functools.partial(jax.jit, static_argnames=("height", "width"))
def _count_views(xyz, scaling, rotation, opacity, valid, extrinsics, intrinsics, *, height, width):
  return jax.vmap(lambda e, k: count_pairs(project(xyz, scaling, rotation, opacity, valid, e, k, height, width)))(
      extrinsics, intrinsics)


def _pad_gaussians(arrays, n: int):
  """Pads the Gaussians to a power-of-two count (compile once per bucket); padding rows are invalid."""
  bucket = max(256, 1 << max(0, n - 1).bit_length())
  pad = lambda a: jnp.pad(a, [(0, bucket - n)] + [(0, 0)] * (a.ndim - 1))
  return [pad(a) for a in arrays] + [jnp.arange(bucket) < n]


def render_gaussians(xyz, scaling, rotation, opacity, color, *, extrinsics, intrinsics, height: int, width: int,
                     bg, capacity: int | None = None):
  """Renders 3D Gaussians as TRELLIS does (mip-splatting, 2D filter 0.1 px^2).

  Args:
    xyz: [n, 3] centres; scaling: [n, 3] standard deviations; rotation: [n, 4] unit quaternions (w, x, y, z);
      opacity: [n] or [n, 1] in [0, 1]; color: [n, 3] (activated: ``max(0.5 + C0 f_dc, 0)``).
    extrinsics: [4, 4] or [V, 4, 4] OpenCV world-to-camera (x right, y down, z forward).
    intrinsics: [3, 3] or [V, 3, 3] normalised (focal and centre in units of the image size).
    height, width: image size in pixels; bg: [3] background colour.
    capacity: static number of (tile, Gaussian) pairs per view. None: counted on the host and rounded up
      to a power of two (one compilation per image size, capacity bucket and Gaussian-count bucket);
      required when the inputs are traced (inside ``jit`` or ``grad``). A view with more pairs comes out NaN.
  Returns:
    rgb [H, W, 3] and alpha [H, W] (with a leading V for batched cameras), float32; rgb = composited
    colour + T bg, alpha = 1 - T. A view where every Gaussian is culled renders ``bg``.
  """
  extrinsics, intrinsics = jnp.asarray(extrinsics, jnp.float32), jnp.asarray(intrinsics, jnp.float32)
  single = extrinsics.ndim == 2
  if single:
    extrinsics, intrinsics = extrinsics[None], intrinsics[None]
  n = xyz.shape[0]
  shapes = {"xyz": (xyz, (n, 3)), "scaling": (scaling, (n, 3)), "rotation": (rotation, (n, 4)),
            "color": (color, (n, 3)), "extrinsics": (extrinsics, (extrinsics.shape[0], 4, 4)),
            "intrinsics": (intrinsics, (extrinsics.shape[0], 3, 3))}
  for name, (array, shape) in shapes.items():
    if tuple(np.shape(array)) != shape:
      raise ValueError(f"render_gaussians: {name} must be {list(shape)}, got {list(np.shape(array))}")
  opacity = jnp.reshape(opacity, (n,))
  arrays = _pad_gaussians([jnp.asarray(a, jnp.float32) for a in (xyz, scaling, rotation, opacity, color)], n)
  xyz, scaling, rotation, opacity, color, valid = arrays
  if capacity is None:
    if any(isinstance(a, jax.core.Tracer) for a in arrays + [extrinsics, intrinsics]):
      raise ValueError("render_gaussians: pass capacity= when rendering inside jit or grad "
                       "(pair_capacity(count_tile_pairs(...).max()))")
    counts = np.asarray(_count_views(xyz, scaling, rotation, opacity, valid, extrinsics, intrinsics,
                                     height=height, width=width))
    capacity = pair_capacity(int(counts.max(initial=0)))
  rgb, alpha = _render_views(xyz, scaling, rotation, opacity, color, valid, extrinsics, intrinsics,
                             jnp.asarray(bg, jnp.float32), height=height, width=width, capacity=capacity)
  return (rgb[0], alpha[0]) if single else (rgb, alpha)


def count_tile_pairs(xyz, scaling, rotation, opacity, *, extrinsics, intrinsics, height: int, width: int) -> np.ndarray:
  """[V] the number of (tile, Gaussian) pairs of each view (host side): ``pair_capacity(max)`` is the
  ``capacity`` that :func:`render_gaussians` needs."""
  extrinsics = jnp.asarray(extrinsics, jnp.float32).reshape(-1, 4, 4)
  intrinsics = jnp.asarray(intrinsics, jnp.float32).reshape(-1, 3, 3)
  n = xyz.shape[0]
  arrays = _pad_gaussians([jnp.asarray(a, jnp.float32) for a in (xyz, scaling, rotation, jnp.reshape(opacity, (n,)))], n)
  return np.asarray(_count_views(*arrays, extrinsics, intrinsics, height=height, width=width))

