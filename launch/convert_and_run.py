"""End-to-end check of a TRELLIS checkpoint: convert to Flax (orbax), reload, run, convert back.

    python launch/convert_and_run.py --workdir=/tmp/mdt_convert

Defaults to the tiny TRELLIS sparse-structure flow shipped in tests/fixtures/trellis, whose
``.io.npz`` holds the upstream PyTorch output: the script prints our max error against it.
"""
import time
from pathlib import Path

import jax
import numpy as np
from absl import flags

from conversion import trellis
from conversion.common import read_safetensors
from mdt_jax.models import registry
from mdt_jax import cli, numerics

_REPO = Path(__file__).resolve().parents[1]
_CHECKPOINT = flags.DEFINE_string("checkpoint", str(_REPO / "tests/fixtures/trellis/ss_flow"),
                                  "TRELLIS checkpoint stem (NAME.json + NAME.safetensors).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the converted checkpoints go.", required=True)


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


def main(argv):
  del argv
  stem, workdir = Path(_CHECKPOINT.value), Path(_WORKDIR.value)
  run_dir = workdir / f"run_{time.strftime('%Y%m%d_%H%M%S')}"
  model, params = trellis.load_checkpoint(stem)
  print(f"loaded {stem}: {type(model).__name__}, {sum(p.size for p in jax.tree.leaves(params)):,} params")
  trellis.save_flax_checkpoint(run_dir / "flax", model, params)
  model, params = trellis.load_flax_checkpoint(run_dir / "flax")
  x, t, cond, reference = _inputs(model, stem)
  forward = jax.jit(registry.velocity(model))
  with numerics.parity_precision():  # full float32 matmuls off CPU: docs/design.md, "Numerics"
    v = jax.block_until_ready(forward(params, x, t, cond))
    start = time.perf_counter()
    v = jax.block_until_ready(forward(params, x, t, cond))
    precision = jax.config.jax_default_matmul_precision or "default"
  print(f"forward on x {tuple(x.shape)}: {1e3 * (time.perf_counter() - start):.1f} ms (jit, compiled, "
        f"{precision} matmul precision on {jax.default_backend()})")
  if reference is not None:
    err = float(np.max(np.abs(np.asarray(v) - reference)))
    print(f"max |ours - upstream PyTorch| = {err:.2e} (relative to max |ref|: {err / np.max(np.abs(reference)):.2e})")
  trellis.save_checkpoint(run_dir / "roundtrip", model, params)
  original, back = read_safetensors(f"{stem}.safetensors"), read_safetensors(run_dir / "roundtrip.safetensors")
  same = original.keys() == back.keys() and all(
      back[k].dtype == v.dtype and np.array_equal(back[k], v) for k, v in original.items())
  print(f"TRELLIS -> Flax -> TRELLIS round trip identical: {same}")
  print(f"outputs in {run_dir}")


if __name__ == "__main__":
  cli.run(main)
