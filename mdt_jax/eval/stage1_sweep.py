"""A stage-1 (sparse-structure) toy checkpoint against the held-out set at several step counts and
guidance scales (launch/evaluate_ss.py): `per_condition` shapes sampled per test condition, scored by
evaluate_stage1 (1-NNA, lower is better down to the real-vs-real floor, COV, MMD, family fidelity),
with the sampling latency per shape (compiled, measured).
"""
import time

import jax
import numpy as np

from conversion.trellis import load_checkpoint
from mdt_jax import flow
from mdt_jax.data import toy_condition
from mdt_jax.eval.decode import decode_latents
from mdt_jax.eval.reference import split_halves, toy_split
from mdt_jax.eval.stage1 import evaluate_stage1
from mdt_jax.models import registry


def stage1_sweep(checkpoint: str, steps: list[int], cfg: list[float], per_condition: int = 16, seed: int = 0,
                 toy_config: str = "r16", log=print) -> None:
  """Logs the real-vs-real row, then one line per (w in ``cfg``, step count in ``steps``) for the
  TRELLIS-format stage-1 checkpoint ``checkpoint``, sampled from noise seed ``seed``."""
  model, params = load_checkpoint(checkpoint)
  test = toy_split(toy_config, "test")
  first, second = split_halves(test.cond_id, per_condition)
  reference, second_real = test.take(first), test.take(second)
  real = evaluate_stage1(second_real.occupancy, second_real.cond_id, reference.occupancy, reference.cond_id)
  log(f"real vs real: 1-NNA {real['1nna']:.3f} (floor {real['1nna_exchangeable']:.3f}), COV {real['cov']:.3f}, "
      f"MMD {real['mmd']:.3f}, fidelity {real['fidelity']:.3f}")

  cond_ids = reference.cond_id
  cond = np.stack([toy_condition.condition_tokens(int(c)) for c in cond_ids])
  x, _, _ = model.example_inputs(batch_size=len(cond_ids))
  noise = jax.random.normal(jax.random.PRNGKey(seed), x.shape)
  sampler = flow.jit_sample(registry.velocity(model))
  for w in cfg:
    for count in steps:
      run = lambda: jax.block_until_ready(sampler(params, noise, cond, steps=count, cfg_strength=w)[0])
      run()
      start = time.perf_counter()
      latents = np.asarray(run())
      per_shape = (time.perf_counter() - start) / len(cond_ids)
      m = evaluate_stage1(decode_latents(latents), cond_ids, reference.occupancy, reference.cond_id)
      log(f"steps {count:2d} w {w:g}: 1-NNA {m['1nna']:.3f}, COV {m['cov']:.3f}, MMD {m['mmd']:.3f}, "
          f"fidelity {m['fidelity']:.3f}, {per_shape * 1e3:.2f} ms/shape (batch {len(cond_ids)})")
