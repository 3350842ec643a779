"""Compute dtypes by name, and the matmul precision that parity with PyTorch float32 assumes.

Parity claims (our outputs against upstream PyTorch float32 within 1e-4 of the reference's largest
value, ``docs/design.md``) hold under full float32 matmuls. CPUs compute float32 matmuls exactly;
GPUs default to TF32 (10 mantissa bits, relative error ~1e-3) and TPUs to bf16 passes. Code that
checks parity wraps itself in :func:`parity_precision`; training and sampling keep the backend's
fast default.
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
# float16 training would need dynamic loss scaling, which is not offered; float16 inference is
# TRELLIS's use_fp16 arithmetic.
TRAINING_DTYPES = ("float32", "bfloat16")


def compute_dtype(name: str, *, allowed=tuple(COMPUTE_DTYPES), field: str = "compute_dtype"):
  """``"bfloat16"`` -> ``jnp.bfloat16``; ValueError naming ``field`` and the allowed names otherwise."""
  if name not in allowed:
    raise ValueError(f"{field} must be one of {list(allowed)}, got {name!r}")
  return COMPUTE_DTYPES[name]


@contextlib.contextmanager
def parity_precision(backend: str | None = None):
  """Full-precision float32 matmuls inside the block wherever the backend would round them.

  ``backend`` defaults to ``jax.default_backend()``. On CPU nothing changes (its float32 matmuls
  are already exact, and the jit cache stays shared with the default); on GPU and TPU,
  ``jax.default_matmul_precision("highest")`` holds for everything traced inside the block.
  """
  if (backend or jax.default_backend()) == "cpu":
    yield
    return
  with jax.default_matmul_precision("highest"):
    yield
