"""Evaluates a stage-1 (sparse-structure) toy checkpoint: samples 16 shapes per test condition at
each step count and guidance scale and scores them against the held-out set (mdt_jax.eval).

    python launch/evaluate_ss.py --checkpoint=teachers/ss_toy --steps=25,4,2,1 --cfg=0,1

Prints one line per (steps, w): 1-NNA (lower is better down to the real-vs-real floor printed
first), COV, MMD, family fidelity, and the sampling latency per shape (compiled, measured).
"""
import time

import jax
import numpy as np
from absl import flags

from conversion.trellis import load_checkpoint
from mdt_jax import cli, eval as toy_eval
from mdt_jax import flow
from mdt_jax.data import toy_condition
from mdt_jax.models import registry

_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "TRELLIS-format stem of a stage-1 toy model.", required=True)
_STEPS = flags.DEFINE_list("steps", ["25", "4", "2", "1"], "Euler step counts.")
_CFG = flags.DEFINE_list("cfg", ["0"], "Guidance scales w.")
_PER_CONDITION = flags.DEFINE_integer("per_condition", 16, "Shapes per condition (generated and reference).")
_SEED = flags.DEFINE_integer("seed", 0, "Noise seed.")
_TOY_CONFIG = flags.DEFINE_string("toy_config", "r16", "Toy dataset config (resolution).")


def main(argv):
  del argv
  model, params = load_checkpoint(_CHECKPOINT.value)
  test = toy_eval.toy_split(_TOY_CONFIG.value, "test")
  first, second = toy_eval.split_halves(test.cond_id, _PER_CONDITION.value)
  reference, second_real = test.take(first), test.take(second)
  real = toy_eval.evaluate_stage1(second_real.occupancy, second_real.cond_id, reference.occupancy, reference.cond_id)
  print(f"real vs real: 1-NNA {real['1nna']:.3f} (floor {real['1nna_exchangeable']:.3f}), COV {real['cov']:.3f}, "
        f"MMD {real['mmd']:.3f}, fidelity {real['fidelity']:.3f}")

  cond_ids = reference.cond_id
  cond = np.stack([toy_condition.condition_tokens(int(c)) for c in cond_ids])
  x, _, _ = model.example_inputs(batch_size=len(cond_ids))
  noise = jax.random.normal(jax.random.PRNGKey(_SEED.value), x.shape)
  sampler = flow.jit_sample(registry.velocity(model))
  for w in map(float, _CFG.value):
    for steps in map(int, _STEPS.value):
      run = lambda: jax.block_until_ready(sampler(params, noise, cond, steps=steps, cfg_strength=w)[0])
      run()
      start = time.perf_counter()
      latents = np.asarray(run())
      per_shape = (time.perf_counter() - start) / len(cond_ids)
      m = toy_eval.evaluate_stage1(toy_eval.decode_latents(latents), cond_ids, reference.occupancy, reference.cond_id)
      print(f"steps {steps:2d} w {w:g}: 1-NNA {m['1nna']:.3f}, COV {m['cov']:.3f}, MMD {m['mmd']:.3f}, "
            f"fidelity {m['fidelity']:.3f}, {per_shape * 1e3:.2f} ms/shape (batch {len(cond_ids)})")


if __name__ == "__main__":
  cli.run(main)
