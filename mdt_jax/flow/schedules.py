"""Sampling time grids (host side, float64, as TRELLIS computes them with numpy).

TRELLIS's Euler samplers step from t = 1 (noise) to t = 0 (data) on ``linspace(1, 0, steps + 1)``
warped by ``rescale_t`` r: t' = r t / (1 + (r - 1) t) (r > 1 spends more steps near the noise end).
The grid is computed on the host in float64 and the per-step scalars enter the compiled loop as
float32 arrays, reproducing upstream's arithmetic:

* the model time is float32(1000 t): our models take flow time t and embed float32(1000) * t in
  float32, so :func:`model_time` picks the float32 t for which that product equals
  float32(1000 t) (see there);
* the update is ``x - (t - t_prev) v`` with the float64 difference rounded to float32 once (torch
  multiplies a float32 tensor by a Python float in float32).
"""
from __future__ import annotations

import dataclasses

import numpy as np


def rescale_time(t, rescale_t: float):
  """TRELLIS's warp t' = r t / (1 + (r - 1) t): 0 -> 0, 1 -> 1, monotone for r > 0."""
  return rescale_t * t / (1.0 + (rescale_t - 1.0) * t)


def time_grid(steps: int, rescale_t: float = 1.0) -> np.ndarray:
  """[steps + 1] float64 flow times from 1 down to 0 (both included)."""
  if steps < 1:
    raise ValueError(f"time_grid: steps must be >= 1, got {steps}")
  if rescale_t <= 0:
    raise ValueError(f"time_grid: rescale_t must be > 0, got {rescale_t}")
  return rescale_time(np.linspace(1.0, 0.0, steps + 1), rescale_t)


def model_time(t: np.ndarray) -> np.ndarray:
  """float64 flow times -> float32 flow times whose embedding input matches upstream's.

  Upstream calls its model with float32(1000 t); ours compute float32(1000) * t32 in float32. The
  nearest float32 to t does not always give the same product (for ~1 in 4 times it is one ulp
  off), so among the float32 neighbours of t (within 3 ulps) the one closest to t whose product
  equals float32(1000 t) is taken; if none does (about 1 in 100), the nearest float32.
  """
  t = np.asarray(t, np.float64)
  out = t.astype(np.float32)
  for i, ti in enumerate(t.reshape(-1)):
    target = np.float32(1000.0 * ti)
    nearest = np.float32(ti)
    candidates = [nearest]
    for _ in range(3):
      candidates = [np.nextafter(candidates[0], np.float32(-np.inf))] + candidates + \
                   [np.nextafter(candidates[-1], np.float32(np.inf))]
    hits = [c for c in candidates if np.float32(1000.0) * c == target]
    out.reshape(-1)[i] = min(hits, key=lambda c: abs(float(c) - ti)) if hits else nearest
  return out


@dataclasses.dataclass(frozen=True)
class EulerSchedule:
  """Per-step scalars of an Euler sampler (step i goes from ``t[i]`` to ``t[i + 1]``).

  t: [steps + 1] float64 flow times, 1 -> 0. model_t: [steps] float32 model input times
  (:func:`model_time`). dt: [steps] float32 ``t[i] - t[i + 1]``. guidance: [steps] bool, whether
  classifier-free guidance applies at step i (``lo <= t[i] <= hi``, inclusive, in flow time).
  """
  t: np.ndarray
  model_t: np.ndarray
  dt: np.ndarray
  guidance: np.ndarray

  @property
  def steps(self) -> int:
    return len(self.dt)


def euler_schedule(steps: int, rescale_t: float = 1.0, cfg_interval: tuple[float, float] = (0.0, 1.0),
                   cfg_strength: float = 0.0) -> EulerSchedule:
  """The schedule of TRELLIS's Euler (and CFG / guidance-interval) samplers; no guidance at all when
  ``cfg_strength`` (TRELLIS's w; TRELLIS.2's g is 1 + w) is 0."""
  lo, hi = cfg_interval
  t = time_grid(steps, rescale_t)
  guidance = (t[:-1] >= lo) & (t[:-1] <= hi) & (cfg_strength != 0.0)
  return EulerSchedule(t=t, model_t=model_time(t[:-1]), dt=(t[:-1] - t[1:]).astype(np.float32),
                       guidance=guidance)
