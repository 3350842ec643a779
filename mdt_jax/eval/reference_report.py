"""The toy benchmark's reference rows and the cost of one evaluation (launch/toy_eval_reference.py).

Scores the second real set of the default dataset's test split against its reference set
(mdt_jax.eval.reference), the ideal row of every report; then, as the row's seed spread, the first
`per_condition` shapes of every condition of the test splits of dataset seeds 1..spread_seeds
against the same reference (fresh real samples, as a generator's sampling seeds give fresh
samples). Fidelity is classified by the training split. Stage 2 is scored on the real features of the
second real set, against the reference set's real features as a distribution (FD, 1-NNA) and
against the conditional mean (RMSE: 0 for height, depth, normal; the colour draws' own spread for
colour), and timed; so is the whole pipeline evaluation.

Measured on the 2-core CPU machine (2026-12, toy 2.0.0, other jobs running), r16, 16 vs 16 a
condition, fidelity classified by the 20,000 training shapes, `--spread_seeds=4`:
  real vs real (seed-0 halves):   1-NNA 0.504  COV 0.578  MMD 0.285  fidelity 0.997
  4 fresh real sets, mean +- std: 1-NNA 0.480 +- 0.026  COV 0.583 +- 0.015  MMD 0.281 +- 0.007
                                  fidelity 0.997 +- 0.004
  1-NNA expected of exchangeable sets at 16 vs 16: 0.484
  stage 2, second real set (384 shapes) vs reference: FD 0.027, 1-NNA 0.467 (exchangeable 0.499);
  RMSE to the conditional mean 0 for height, depth and normal, 0.602 for colour (the draws' spread)
  time: evaluate_stage1 0.18 s with the reference set as the fidelity classifier, 1.9 s with the
  20,000 training shapes; evaluate_stage2 1.2 s and evaluate_stage2_distribution 0.4 s (384
  shapes); evaluate_pipeline 3.1 s; generating the train and test splits 11 s; this script 28 s.
"""
import dataclasses
import time

import numpy as np

from mdt_jax import stages
from mdt_jax.data import toy_builder
from mdt_jax.data.toy_features import toy_features
from mdt_jax.eval.decode import occupancy_to_coords
from mdt_jax.eval.pipeline import evaluate_pipeline
from mdt_jax.eval.reference import mean_and_spread, split_halves, toy_split
from mdt_jax.eval.stage1 import evaluate_stage1
from mdt_jax.eval.stage2 import evaluate_stage2
from mdt_jax.eval.stage2_distribution import evaluate_stage2_distribution

def _real_features(split):
  """Packed coords int32 [N, 4] and real features float32 [N, 8] of a split's shapes."""
  feats = [toy_features(o, c, g)[1] for o, c, g in zip(split.occupancy, split.cond_id, split.colour_gradient)]
  return occupancy_to_coords(split.occupancy), np.concatenate(feats)


def _timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  return out, time.perf_counter() - start


def _row(name, mean, std=None):
  cells = [f"{k} {mean[k]:.3f}" + (f" +- {std[k]:.3f}" if std is not None else "") for k in stages.SS.metrics]
  return f"{name:28s} " + "  ".join(cells)


def reference_report(config_name: str = "r16", per_condition: int = 16, spread_seeds: int = 8, log=print) -> dict:
  """The rows and timings of the module docstring for the toy config `config_name`, `per_condition`
  shapes a condition in each compared set, dataset seeds 1..`spread_seeds` for the spread; each line
  goes to `log` as it is measured. -> {"real": stage-1 row, "fresh": [rows], "mean", "std"}."""
  config = {c.name: c for c in toy_builder.ToyShapes.BUILDER_CONFIGS}[config_name]
  n = per_condition
  (train, test), seconds = _timed(lambda: (toy_split(config, "train"), toy_split(config, "test")))
  log(f"generated {config.name} train ({len(train.cond_id)}) and test ({len(test.cond_id)}): {seconds:.1f} s")
  first, second = split_halves(test.cond_id, n)
  ref, real = test.take(first), test.take(second)
  labelled = (train.occupancy, train.family)

  row, seconds = _timed(evaluate_stage1, real.occupancy, real.cond_id, ref.occupancy, ref.cond_id, *labelled)
  log(f"stage 1, {row['num_conditions']} conditions x {n} vs {n}, fidelity by {len(train.cond_id)} "
        f"training shapes: {seconds:.2f} s")
  _, seconds = _timed(evaluate_stage1, real.occupancy, real.cond_id, ref.occupancy, ref.cond_id)
  log(f"stage 1, fidelity by the reference set: {seconds:.2f} s")
  coords, feats = _real_features(real)
  stage2, seconds = _timed(evaluate_stage2, coords, feats, real.cond_id, config.resolution)
  log(f"stage 2 on the real features ({stage2['num_voxels']} voxels): {seconds:.2f} s, rmse to the mean "
        f"{stage2['rmse']:.3g} (height, depth, normal exact: {stage2['rmse_height']:.2g}, {stage2['rmse_depth']:.2g}, "
        f"{stage2['rmse_normal']:.2g}; colour {stage2['rmse_colour']:.3f}), target rms {stage2['target_rms']:.3f}")
  distribution, seconds = _timed(evaluate_stage2_distribution, coords, feats, len(real.cond_id),
                                 *_real_features(ref), len(ref.cond_id))
  log(f"stage 2 as a distribution, second real set vs reference: FD {distribution['fd']:.3f}, 1-NNA "
        f"{distribution['one_nna']:.3f} (exchangeable {distribution['one_nna_exchangeable']:.3f}): {seconds:.2f} s")
  _, seconds = _timed(evaluate_pipeline, coords, feats, real.cond_id, config.resolution, ref.occupancy,
                      ref.cond_id, *labelled)
  log(f"pipeline (both stages): {seconds:.2f} s")

  log(f"\n1-NNA of exchangeable sets at {n} vs {n}: {row['1nna_exchangeable']:.3f}")
  log(_row("real vs real (seed 0)", row))
  fresh = []
  for seed in range(1, spread_seeds + 1):
    other = toy_split(dataclasses.replace(config, seed=seed), "test")
    other = other.take(split_halves(other.cond_id, n)[0])
    fresh.append(evaluate_stage1(other.occupancy, other.cond_id, ref.occupancy, ref.cond_id, *labelled))
    log(_row(f"  fresh real set (seed {seed})", fresh[-1]))
  mean, std = mean_and_spread([{k: r[k] for k in stages.SS.metrics} for r in fresh])
  log(_row(f"spread over {len(fresh)} seeds", mean, std))
  return {"real": row, "fresh": fresh, "mean": mean, "std": std}
