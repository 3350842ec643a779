"""3D Gaussians from the SLat Gaussian decoder's output, activated as TRELLIS's ``Gaussian`` model does
(decoder fixtures README, section 2; SH degree 0).

Per voxel the network emits ``14 G`` channels, in this order, each block reshaped ``(G, k)`` with the
Gaussian index slowest: ``_xyz`` (G, 3), ``_features_dc`` (G, 1, 3), ``_scaling`` (G, 3), ``_rotation``
(G, 4), ``_opacity`` (G, 1). Gaussian ``n G + g`` of a sample comes from its n-th voxel and slot g.
Positions are in the unit cube centred at the origin (``get_xyz``: aabb ``[-0.5, 0.5]^3``).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

SH_C0 = 0.28209479177387814
FIELDS = (("_xyz", (3,)), ("_features_dc", (1, 3)), ("_scaling", (3,)), ("_rotation", (4,)), ("_opacity", (1,)))
REQUIRED = ("lr", "perturb_offset", "voxel_size", "num_gaussians", "3d_filter_kernel_size", "scaling_bias",
            "opacity_bias", "scaling_activation")


def check_config(config: Mapping[str, Any], owner: str):
  """A Gaussian ``representation_config`` must name every field used here (ValueError naming the missing)."""
  missing = [k for k in REQUIRED if k not in (config or {})]
  if missing:
    raise ValueError(f"{owner}: representation_config misses {missing} (needs {list(REQUIRED)})")
  if config["scaling_activation"] != "softplus":
    raise NotImplementedError(f"{owner}: scaling_activation {config['scaling_activation']!r} (only 'softplus')")


def channels(config: Mapping[str, Any]) -> int:
  """Output channels per voxel: 14 per Gaussian (3 + 3 + 3 + 4 + 1)."""
  return 14 * int(config["num_gaussians"])


def radical_inverse(i: int, base: int) -> float:
  """Base-``base`` digit reversal of ``i`` as a fraction in [0, 1)."""
  out, f = 0.0, 1.0 / base
  while i:
    out += (i % base) * f
    i //= base
    f /= base
  return out


def hammersley(n: int) -> np.ndarray:
  """[n, 3] float64 Hammersley points ``(g / n, radinv_2(g), radinv_3(g))``."""
  return np.array([[g / n, radical_inverse(g, 2), radical_inverse(g, 3)] for g in range(n)], np.float64)


def offset_perturbation(num_gaussians: int, voxel_size: float) -> np.ndarray:
  """[G, 3] float32 ``atanh((2 ham_g - 1) / voxel_size)``: spreads each voxel's G Gaussians over it."""
  return np.arctanh(((2 * hammersley(num_gaussians) - 1) / voxel_size).astype(np.float32)).astype(np.float32)


def raw_fields(feats: jax.Array, coords: jax.Array, config: Mapping[str, Any], resolution: int,
               perturbation: jax.Array | None) -> dict[str, jax.Array]:
  """feats [N, 14 G] float32, coords [N, 4] (b, x, y, z) -> TRELLIS's stored fields, Gaussian-major
  [N G, ...]: ``_xyz`` in the unit cube [0, 1]^3 (voxel centre plus a tanh offset of at most
  ``voxel_size / 2`` voxels), the others scaled by their learning-rate factor ``lr``."""
  g = int(config["num_gaussians"])
  n = feats.shape[0]
  lr = config["lr"]
  out, start = {}, 0
  for name, shape in FIELDS:
    width = g * math.prod(shape)
    out[name] = feats[:, start:start + width].reshape(n, g, *shape) * lr[name]
    start += width
  offset = out["_xyz"] + (perturbation[None] if perturbation is not None else 0)
  centre = (coords[:, 1:].astype(jnp.float32) + 0.5) / resolution
  out["_xyz"] = centre[:, None, :] + jnp.tanh(offset) * (config["voxel_size"] / (2 * resolution))
  return {k: v.reshape(n * g, *v.shape[2:]) for k, v in out.items()}


def activate(raw: Mapping[str, jax.Array], config: Mapping[str, Any]) -> dict[str, jax.Array]:
  """Raw fields -> the Gaussian properties (upstream's ``get_*``) and the rasterizer's colour:
  ``xyz`` [n, 3] (``_xyz - 0.5``), ``scaling`` [n, 3] ``sqrt(softplus(_scaling + b)^2 + f^2)`` with
  ``b = softplus^-1(scaling_bias)`` and the 3D-filter floor f, ``rotation`` [n, 4] (w, x, y, z) unit
  quaternions of ``_rotation + (1, 0, 0, 0)``, ``opacity`` [n, 1] ``sigmoid(_opacity + logit(opacity_bias))``,
  ``features_dc`` [n, 1, 3] (SH degree 0), ``color`` [n, 3] ``max(0.5 + C0 f_dc, 0)``."""
  s_bias = float(np.float32(config["scaling_bias"] + np.log(-np.expm1(-config["scaling_bias"]))))
  o_bias = float(np.float32(np.log(config["opacity_bias"] / (1 - config["opacity_bias"]))))
  floor = config["3d_filter_kernel_size"]
  rot = raw["_rotation"] + jnp.array([1.0, 0.0, 0.0, 0.0], jnp.float32)
  return {
      "xyz": raw["_xyz"] - 0.5,
      "scaling": jnp.sqrt(jnp.square(jax.nn.softplus(raw["_scaling"] + s_bias)) + floor ** 2),
      "rotation": rot / jnp.maximum(jnp.linalg.norm(rot, axis=-1, keepdims=True), 1e-12),
      "opacity": jax.nn.sigmoid(raw["_opacity"] + o_bias),
      "features_dc": raw["_features_dc"],
      "color": jnp.maximum(0.5 + SH_C0 * raw["_features_dc"][:, 0], 0.0),
  }
