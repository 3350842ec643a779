"""Speed benchmarks, measured side by side in one run.

    python launch/benchmark.py                      # every section
    python launch/benchmark.py --only=ss_forward --ss_sizes=tiny,L

Each section prints one line per measurement: median wall time of ``--repeats`` compiled calls
(after one warm-up call that compiles), and derived figures.
"""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from conversion import trellis  # noqa: E402

_ONLY = flags.DEFINE_list("only", [], "Sections to run (default: all).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median reported).")
_SS_SIZES = flags.DEFINE_list("ss_sizes", ["tiny", "L"], "SS-flow configs for ss_forward: tiny, L.")

_REPO = Path(__file__).resolve().parents[1]
SS_CONFIGS = {
    "tiny": trellis.read_config(_REPO / "tests/fixtures/trellis/ss_flow"),
    # TRELLIS-image-large ss_flow_img_dit_L_16l8: 555 M params, 16^3 = 4,096 tokens.
    "L": {"name": "SparseStructureFlowModel", "args": dict(
        resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
        num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=1, pe_mode="ape", qk_rms_norm=True,
        use_fp16=True)},
}
COND_TOKENS = {"tiny": 7, "L": 1374}


def time_call(fn, *args, repeats=None):
  """-> (compile+first-call seconds, median seconds of the following calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats or _REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, float(np.median(times))


def ss_forward():
  """Forward pass of the SS flow (batch 1, float32 compute) at the configured sizes."""
  for size in _SS_SIZES.value:
    model = trellis.build_model(SS_CONFIGS[size])
    r, c = model.resolution, model.cond_channels
    params = jax.jit(lambda key: trellis.init_params(model, key))(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, r, r, r, model.in_channels), np.float32))
    t = jnp.asarray([0.5], jnp.float32)
    cond = jnp.asarray(rng.standard_normal((1, COND_TOKENS[size], c), np.float32))
    forward = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
    flops = forward.lower(params, x, t, cond).compile().cost_analysis().get("flops", float("nan"))
    first, median = time_call(forward, params, x, t, cond)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    print(f"ss_forward[{size}]: {n_params / 1e6:.1f} M params, {(r // model.patch_size) ** 3} tokens, "
          f"{flops / 1e9:.1f} GFLOP: {median * 1e3:.1f} ms/forward (first call incl. compile {first:.1f} s), "
          f"{flops / median / 1e9:.0f} GFLOP/s")
    del params


def sampling():
  """Stage-1 generation with the tiny fixture checkpoints (batch 1, float32): the SS-flow Euler sampler
  at 1, 2 and 25 steps without and with CFG (w = 3 on every step, rescale_t 3, one batched forward of
  2 per step), then the SS decoder; and the 25-step-CFG / 1-step ratio. One jitted sampler with the
  params as an argument (one compilation per setting)."""
  from mdt_jax.flow import jit_sample
  fixtures = _REPO / "tests/fixtures/trellis"
  model, params = trellis.load_checkpoint(fixtures / "ss_flow")
  decoder, dec_params = trellis.load_checkpoint(fixtures / "ss_dec")
  r = model.resolution
  rng = np.random.default_rng(0)
  noise = jnp.asarray(rng.standard_normal((1, r, r, r, model.in_channels), np.float32))
  cond = jnp.asarray(rng.standard_normal((1, COND_TOKENS["tiny"], model.cond_channels), np.float32))
  run = jit_sample(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
  medians = {}
  for steps in (1, 2, 25):
    for cfg in (0.0, 3.0):
      first, medians[steps, cfg] = time_call(
          lambda p, x, c: run(p, x, c, steps=steps, rescale_t=3.0, cfg_strength=cfg)[0], params, noise, cond)
      print(f"sampling[ss_flow tiny, {steps} step(s), {'CFG w=3' if cfg else 'no CFG'}]: "
            f"{medians[steps, cfg] * 1e3:.1f} ms ({medians[steps, cfg] / steps * 1e3:.2f} ms/step; "
            f"first call incl. compile {first:.1f} s)")
  decode = jax.jit(lambda p, z: decoder.apply({"params": p}, z))
  z = run(params, noise, cond, steps=1, rescale_t=3.0)[0]
  first, median = time_call(decode, dec_params, z)
  print(f"sampling[ss_decoder tiny, {r}^3 -> {2 * r}^3]: {median * 1e3:.1f} ms "
        f"(first call incl. compile {first:.1f} s)")
  print(f"sampling: 25 steps with CFG / 1 step without = {medians[25, 3.0] / medians[1, 0.0]:.1f}x "
        f"(25 steps without CFG / 1 step: {medians[25, 0.0] / medians[1, 0.0]:.1f}x)")


SECTIONS = {"ss_forward": ss_forward, "sampling": sampling}


def main(argv):
  del argv
  unknown = sorted(set(_ONLY.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown --only section(s) {unknown}; known: {sorted(SECTIONS)}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({len(jax.devices())} device(s))")
  for name in _ONLY.value or SECTIONS:
    SECTIONS[name]()


if __name__ == "__main__":
  app.run(main)
