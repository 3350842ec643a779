"""Shared test set-up: a compilation cache for subprocesses, fixture locations, numerics helpers, and
full float32 matmul precision for the parity tests off CPU (``pytest.mark.parity``, docs/design.md)."""
import os
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), "mdt_jax_test_cache"))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from fixture_scan import TRELLIS_DIR  # noqa: E402
from mdt_jax import numerics  # noqa: E402


@pytest.fixture(autouse=True)
def _parity_precision(request):
  """Tests marked ``parity`` compare with upstream float32: run them at the highest matmul precision
  wherever the backend's default rounds float32 matmuls (GPU TF32, TPU bf16 passes)."""
  if request.node.get_closest_marker("parity") is None:
    yield
    return
  with numerics.parity_precision():
    yield


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


def random_zero_inits(params, seed=0, std=0.1):
  """Params with every all-zero leaf (TRELLIS zero-initialises adaLN, out_layer, conv2 and biases)
  redrawn from N(0, std^2), so that a freshly initialised network's every weight matters in a test."""
  import jax
  leaves, treedef = jax.tree.flatten(params)
  rng = np.random.default_rng(seed)
  leaves = [rng.normal(0, std, leaf.shape).astype(leaf.dtype) if not np.any(leaf) else leaf for leaf in leaves]
  return jax.tree.unflatten(treedef, leaves)


@pytest.fixture(scope="session")
def trellis_dir():
  return TRELLIS_DIR
