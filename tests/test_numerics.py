"""Matmul precision for parity checks (docs/design.md, "Numerics") and compute dtypes by name."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdt_jax import numerics

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend, inside", [("gpu", "highest"), ("tpu", "highest"), ("cpu", None)])
def test_parity_precision_is_highest_off_cpu_and_restored_after(backend, inside):
  before = jax.config.jax_default_matmul_precision
  with numerics.parity_precision(backend):
    assert jax.config.jax_default_matmul_precision == (inside or before)
  assert jax.config.jax_default_matmul_precision == before


@pytest.mark.parity
@pytest.mark.skipif(jax.default_backend() == "cpu",
                    reason="CPU float32 matmuls are exact at any precision setting; this checks that the parity "
                           "fixture lifts GPU TF32 / TPU bf16 rounding")
def test_parity_marker_gives_float32_matmuls_on_this_accelerator():
  # Under TF32 (GPU) or bf16 passes (TPU) the relative error of this product is ~1e-3 to 1e-2.
  rng = np.random.default_rng(0)
  a, b = rng.standard_normal((2, 512, 512)).astype(np.float32)
  assert jax.config.jax_default_matmul_precision == "highest"
  ours = np.asarray(jax.jit(jnp.matmul)(a, b), np.float64)
  exact = a.astype(np.float64) @ b.astype(np.float64)
  assert np.max(np.abs(ours - exact)) / np.max(np.abs(exact)) < 1e-5


def test_unmarked_tests_keep_the_fast_default():
  assert jax.config.jax_default_matmul_precision == os.environ.get("JAX_DEFAULT_MATMUL_PRECISION")


def test_compute_dtype_names():
  assert numerics.compute_dtype("bfloat16") == jnp.bfloat16
  assert numerics.compute_dtype("float16") == jnp.float16
  with pytest.raises(ValueError, match=r"config.compute_dtype must be one of \['float32', 'bfloat16'\], "
                                       r"got 'float16'"):
    numerics.compute_dtype("float16", allowed=numerics.TRAINING_DTYPES, field="config.compute_dtype")


def test_train_cli_dtype_flag_overrides_the_config_and_refuses_float16():
  def dry_run(*flags):
    return subprocess.run([sys.executable, "launch/train.py", "--config=configs/teacher.py:ss_toy", "--dry_run",
                           *flags], cwd=ROOT, capture_output=True, text=True, timeout=120)
  r = dry_run("--dtype=bfloat16")
  assert r.returncode == 0, r.stderr[-2000:]
  assert "compute_dtype: bfloat16" in r.stdout
  r = dry_run("--dtype=float16")
  assert r.returncode != 0 and "--dtype" in r.stderr and "float16" in r.stderr
