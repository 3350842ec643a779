"""Shared test set-up: a compilation cache for subprocesses, fixture locations, numerics helpers."""
import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mdt_jax_test_cache"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fixture_scan import TRELLIS_DIR  # noqa: E402


def channels_last(x):
  """[N, C, ...] -> [N, ..., C]."""
  return np.moveaxis(np.asarray(x), 1, -1)


def assert_close(actual, expected, *, atol=1e-5, rtol=1e-5, relative_to_max=False, what=""):
  """Elementwise |a - e| <= atol + rtol |e|; with ``relative_to_max`` atol is scaled by max |e|."""
  actual = np.asarray(actual, np.float64)
  expected = np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
  if relative_to_max:
    atol = atol * max(float(np.max(np.abs(expected))), 1e-12)
  err = np.abs(actual - expected) - (atol + rtol * np.abs(expected))
  worst = int(np.argmax(err))
  assert err.flat[worst] <= 0, (f"{what}: max abs error {np.max(np.abs(actual - expected)):.3g} exceeds "
                                f"atol {atol:.3g} + rtol {rtol:g}|ref| at flat index {worst}")


@pytest.fixture(scope="session")
def trellis_dir():
  return TRELLIS_DIR
