"""End-to-end check of a TRELLIS checkpoint (launch/convert_and_run.py): convert to Flax (orbax),
reload, run, convert back.

When an ``.io.npz`` sits beside the checkpoint (the tiny fixtures hold the upstream PyTorch output),
the forward's max error against it is reported.
"""
import time
from pathlib import Path

import jax
import numpy as np

from conversion import trellis
from conversion.common import read_safetensors
from mdt_jax import numerics
from mdt_jax.models import registry


def _inputs(model, stem: Path):
  """The checkpoint's reference inputs/output when an ``.io.npz`` sits beside it, else random."""
  io = Path(f"{stem}.io.npz")
  if io.exists():
    z = np.load(io)
    return np.moveaxis(z["x"], 1, -1), z["t"] / 1000.0, z["cond"], np.moveaxis(z["out"], 1, -1)
  x, t, cond = model.example_inputs(batch_size=2)
  rng = np.random.default_rng(0)
  return (rng.standard_normal(x.shape, np.float32), rng.uniform(size=t.shape).astype(np.float32),
          rng.standard_normal(cond.shape, np.float32), None)


def round_trip(stem: Path, workdir: Path, log=print) -> Path:
  """TRELLIS ``stem`` -> orbax -> forward -> TRELLIS under ``workdir/run_<time>``; each finding to
  ``log`` (load, forward time, error against the reference, whether the bytes came back). -> the run dir."""
  stem, workdir = Path(stem), Path(workdir)
  run_dir = workdir / f"run_{time.strftime('%Y%m%d_%H%M%S')}"
  model, params = trellis.load_checkpoint(stem)
  log(f"loaded {stem}: {type(model).__name__}, {sum(p.size for p in jax.tree.leaves(params)):,} params")
  trellis.save_flax_checkpoint(run_dir / "flax", model, params)
  model, params = trellis.load_flax_checkpoint(run_dir / "flax")
  x, t, cond, reference = _inputs(model, stem)
  forward = jax.jit(registry.velocity(model))
  with numerics.parity_precision():  # full float32 matmuls off CPU: docs/design.md, "Numerics"
    v = jax.block_until_ready(forward(params, x, t, cond))
    start = time.perf_counter()
    v = jax.block_until_ready(forward(params, x, t, cond))
    precision = jax.config.jax_default_matmul_precision or "default"
  log(f"forward on x {tuple(x.shape)}: {1e3 * (time.perf_counter() - start):.1f} ms (jit, compiled, "
      f"{precision} matmul precision on {jax.default_backend()})")
  if reference is not None:
    err = float(np.max(np.abs(np.asarray(v) - reference)))
    log(f"max |ours - upstream PyTorch| = {err:.2e} (relative to max |ref|: {err / np.max(np.abs(reference)):.2e})")
  trellis.save_checkpoint(run_dir / "roundtrip", model, params)
  original, back = read_safetensors(f"{stem}.safetensors"), read_safetensors(run_dir / "roundtrip.safetensors")
  same = original.keys() == back.keys() and all(
      back[k].dtype == v.dtype and np.array_equal(back[k], v) for k, v in original.items())
  log(f"TRELLIS -> Flax -> TRELLIS round trip identical: {same}")
  log(f"outputs in {run_dir}")
  return run_dir
