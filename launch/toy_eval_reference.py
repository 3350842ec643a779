"""The toy benchmark's reference rows and the cost of one evaluation.

  python launch/toy_eval_reference.py                      # r16: 24 conditions x 16 vs 16
  python launch/toy_eval_reference.py --spread_seeds=4 --per_condition=8

Scores the second real set of the default dataset's test split against its reference set
(mdt_jax.eval.reference), the ideal row of every report; then, as the row's seed spread, the first
`per_condition` shapes of every condition of the test splits of dataset seeds 1..spread_seeds
against the same reference (fresh real samples, as a generator's sampling seeds give fresh
samples). Fidelity is classified by the training split. Stage 2 is scored on the real features of the
second real set (an exact score is 0) and timed; so is the whole pipeline evaluation.

Measured on the 2-core CPU machine (2026-11, other jobs running: load average ~6), r16, 16 vs 16 a
condition, fidelity classified by the 20,000 training shapes:
  real vs real (seed-0 halves):   1-NNA 0.497  COV 0.604  MMD 0.499  fidelity 0.898
  8 fresh real sets, mean +- std: 1-NNA 0.478 +- 0.011  COV 0.602 +- 0.021  MMD 0.491 +- 0.003
                                  fidelity 0.900 +- 0.015
  1-NNA expected of exchangeable sets at 16 vs 16: 0.484
  time: the set metrics of 24 conditions 0.02 s; evaluate_stage1 0.06-0.25 s with the reference
  set as the fidelity classifier, 2-3.4 s with the 20,000 training shapes (one BLAS product;
  OPENBLAS_NUM_THREADS=1 was faster on the loaded machine); evaluate_stage2 0.8-2 s (toy_features
  of 384 shapes); evaluate_pipeline ~5 s; generating the train and test splits 10.6 s; this script
  with --spread_seeds=8: 52 s.
"""
import dataclasses
import time

import numpy as np
from absl import flags

from mdt_jax import cli, eval as ev
from mdt_jax.data import toy_builder
from mdt_jax.data.toy_features import toy_features

_CONFIG = flags.DEFINE_enum("config", "r16", ["r16", "r32"], "Toy dataset config.")
_PER_CONDITION = flags.DEFINE_integer("per_condition", 16, "Shapes a condition in each compared set.")
_SPREAD_SEEDS = flags.DEFINE_integer("spread_seeds", 8, "Dataset seeds 1..N whose test splits give the "
                                     "fresh real sets of the spread row.")

_STAGE1_KEYS = ("1nna", "cov", "mmd", "fidelity")


def _timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def _row(name, mean, std=None):
  cells = [f"{k} {mean[k]:.3f}" + (f" +- {std[k]:.3f}" if std is not None else "") for k in _STAGE1_KEYS]
  print(f"{name:28s} " + "  ".join(cells))


def main(argv):
  del argv
  config = {c.name: c for c in toy_builder.ToyShapes.BUILDER_CONFIGS}[_CONFIG.value]
  n = _PER_CONDITION.value
  (train, test), seconds = _timed(lambda: (ev.toy_split(config, "train"), ev.toy_split(config, "test")))
  print(f"generated {config.name} train ({len(train.cond_id)}) and test ({len(test.cond_id)}): {seconds:.1f} s")
  first, second = ev.split_halves(test.cond_id, n)
  ref, real = test.take(first), test.take(second)
  labelled = (train.occupancy, train.family)

  row, seconds = _timed(ev.evaluate_stage1, real.occupancy, real.cond_id, ref.occupancy, ref.cond_id, *labelled)
  print(f"stage 1, {row['num_conditions']} conditions x {n} vs {n}, fidelity by {len(train.cond_id)} "
        f"training shapes: {seconds:.2f} s")
  _, seconds = _timed(ev.evaluate_stage1, real.occupancy, real.cond_id, ref.occupancy, ref.cond_id)
  print(f"stage 1, fidelity by the reference set: {seconds:.2f} s")
  coords = ev.occupancy_to_coords(real.occupancy)
  feats = np.concatenate([toy_features(o, c)[1] for o, c in zip(real.occupancy, real.cond_id)])
  stage2, seconds = _timed(ev.evaluate_stage2, coords, feats, real.cond_id, config.resolution)
  print(f"stage 2 on the real features ({stage2['num_voxels']} voxels): {seconds:.2f} s, rmse "
        f"{stage2['rmse']:.3g} (exact: 0), target rms {stage2['target_rms']:.3f}")
  _, seconds = _timed(ev.evaluate_pipeline, coords, feats, real.cond_id, config.resolution, ref.occupancy,
                      ref.cond_id, *labelled)
  print(f"pipeline (both stages): {seconds:.2f} s")

  print(f"\n1-NNA of exchangeable sets at {n} vs {n}: {row['1nna_exchangeable']:.3f}")
  _row("real vs real (seed 0)", row)
  fresh = []
  for seed in range(1, _SPREAD_SEEDS.value + 1):
    other = ev.toy_split(dataclasses.replace(config, seed=seed), "test")
    other = other.take(ev.split_halves(other.cond_id, n)[0])
    fresh.append(ev.evaluate_stage1(other.occupancy, other.cond_id, ref.occupancy, ref.cond_id, *labelled))
    _row(f"  fresh real set (seed {seed})", fresh[-1])
  mean, std = ev.mean_and_spread([{k: r[k] for k in _STAGE1_KEYS} for r in fresh])
  _row(f"spread over {len(fresh)} seeds", mean, std)


if __name__ == "__main__":
  cli.run(main)
