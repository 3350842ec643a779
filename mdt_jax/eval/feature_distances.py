"""Distances between two sets of feature vectors (rows), in float64 on the host: the Fréchet distance of
FID/FD_dinov2 and the kernel distance of KID/KD_dinov2."""
from __future__ import annotations

import numpy as np


def _rows(name: str, x, minimum: int) -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2 or len(x) < minimum:
    raise ValueError(f"{name} must be [n, d] features with n >= {minimum}, got shape {x.shape}")
  return x


def _check_dims(a, b):
  if a.shape[1] != b.shape[1]:
    raise ValueError(f"feature sets differ in dimension: {a.shape[1]} and {b.shape[1]}")


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
  """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off clipped)."""
  w, v = np.linalg.eigh(m)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a, b) -> float:
  """Fréchet distance between Gaussians fitted to the rows of a [n, d] and b [m, d] (n, m >= 2):
  ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` with unbiased covariances.

  ``tr (S_a S_b)^{1/2}`` is the sum of the square roots of the eigenvalues of ``S_a^{1/2} S_b S_a^{1/2}``
  (similar to ``S_a S_b``, and symmetric, so ``eigh`` applies): no complex parts to discard, also for the
  rank-deficient covariances of fewer samples than dimensions (round-off near their zero eigenvalues
  leaves about ``sqrt(eps) tr S`` of error).
  """
  a, b = _rows("frechet_distance: a", a, 2), _rows("frechet_distance: b", b, 2)
  _check_dims(a, b)
  mu = a.mean(0) - b.mean(0)
  cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
  root_a = _psd_sqrt(cov_a)
  middle = root_a @ cov_b @ root_a
  trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)))
  return float(mu @ mu + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


def kernel_distance(a, b) -> float:
  """Unbiased squared MMD between the rows of a [n, d] and b [m, d] (n, m >= 2) with KID's cubic
  polynomial kernel ``k(x, y) = (x . y / d + 1)^3`` (Bińkowski et al. 2018, eq. 4): the means of
  ``k`` over distinct pairs within each set minus twice its mean across the sets. Can be negative."""
  a, b = _rows("kernel_distance: a", a, 2), _rows("kernel_distance: b", b, 2)
  _check_dims(a, b)
  d = a.shape[1]
  k_aa, k_bb, k_ab = ((x @ y.T / d + 1) ** 3 for x, y in ((a, a), (b, b), (a, b)))
  n, m = len(a), len(b)
  within_a = (k_aa.sum() - np.trace(k_aa)) / (n * (n - 1))
  within_b = (k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
  return float(within_a + within_b - 2 * k_ab.mean())
