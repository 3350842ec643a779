"""Strivec radiance-field fields from the SLat radiance-field decoder's output (decoder fixtures README,
section 3): per voxel ``rank`` r, ``dim`` d; channels ``trivec`` [0, 3 r d) as (r, 3, d), ``density``
[3 r d, 3 r d + r) as (r,), ``features_dc`` the rest as (r, 1, 3)."""
from __future__ import annotations

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp


def check_config(config: Mapping[str, Any], owner: str):
  missing = [k for k in ("rank", "dim") if k not in (config or {})]
  if missing:
    raise ValueError(f"{owner}: representation_config misses {missing} (needs ['rank', 'dim'])")


def channels(config: Mapping[str, Any]) -> int:
  """``r 3 d + r + 3 r`` output channels per voxel."""
  r, d = int(config["rank"]), int(config["dim"])
  return r * 3 * d + r + 3 * r


def fields(feats: jax.Array, coords: jax.Array, config: Mapping[str, Any], resolution: int) -> dict[str, jax.Array]:
  """feats [N, channels] float32, coords [N, 4] -> ``position`` [N, 3] (voxel centre in [0, 1]^3),
  ``trivec`` [N, r, 3, d] (+1, as upstream), ``density`` [N, r], ``features_dc`` [N, r, 1, 3], ``depth``
  [N, 1] uint8 (log2 resolution); ``density_shift`` is 0."""
  r, d = int(config["rank"]), int(config["dim"])
  n = feats.shape[0]
  return {
      "position": (coords[:, 1:].astype(jnp.float32) + 0.5) / resolution,
      "trivec": feats[:, :3 * r * d].reshape(n, r, 3, d) + 1.0,
      "density": feats[:, 3 * r * d:3 * r * d + r],
      "features_dc": feats[:, 3 * r * d + r:].reshape(n, r, 1, 3),
      "depth": jnp.full((n, 1), int(math.log2(resolution)), jnp.uint8),
  }
