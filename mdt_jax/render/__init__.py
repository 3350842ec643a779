"""Rendering 3D Gaussians in JAX: TRELLIS's rasterizer (tiled, differentiable) and its orbit cameras."""
from mdt_jax.render.cameras import orbit_cameras
from mdt_jax.render.rasterizer import count_tile_pairs, pair_capacity, render_gaussians

__all__ = ["count_tile_pairs", "orbit_cameras", "pair_capacity", "render_gaussians"]
