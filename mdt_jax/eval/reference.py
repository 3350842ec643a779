"""Reference data and reference rows: the held-out sets, a second real set, and seed spread.

Convention for the toy benchmark: a dataset's `test` split holds `test_per_condition` shapes of
every condition (32 by default). The first `per_condition` of each condition (16) are the reference
set every method is scored against; the next `per_condition` are the second real set, whose score
against the reference is the ideal row of a report. A generator's evaluation-seed spread is the
spread of its metrics over sampling seeds (mean_and_spread); the real row's is measured the same way
over the test splits of other dataset seeds (launch/toy_eval_reference.py).
"""
import dataclasses

import numpy as np

from mdt_jax.data import toy_builder, toy_shapes


@dataclasses.dataclass(frozen=True)
class ToySplit:
  """occupancy bool [n, R, R, R], cond_id int64 [n], family int64 [n], colour_gradient float32
  [n, 3, 3] (stage 2's colour draw, toy_features), in record order."""
  occupancy: np.ndarray
  cond_id: np.ndarray
  family: np.ndarray
  colour_gradient: np.ndarray

  def take(self, index):
    """The shapes at `index` (an index array or a slice)."""
    return ToySplit(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


def toy_split(config, split):
  """A split of the toy dataset, generated in memory: the same shapes, in the same order, as the
  records that `toy_builder.ToyShapes` with this config writes (no TFDS build needed).

  Args: config, a toy_builder.ToyShapesConfig (or a builder config name, "r16" / "r32"); split,
    "train" or "test".
  """
  if isinstance(config, str):
    named = {c.name: c for c in toy_builder.ToyShapes.BUILDER_CONFIGS}
    if config not in named:
      raise ValueError(f"unknown toy config {config!r}; known: {sorted(named)}")
    config = named[config]
  params = toy_builder.split_shapes(config, split)
  return ToySplit(toy_shapes.voxelize(params, config.resolution), toy_builder.split_conditions(config, split),
                  params.family, toy_builder.split_colour_gradients(config, split))


def split_halves(cond_ids, per_condition):
  """Record indices of the reference set and the second real set: (first, second), int64 [k] each.

  For every condition (increasing), `first` takes its first `per_condition` records and `second` the
  next `per_condition`, both in record order. Raises if a condition has fewer than 2 per_condition.
  """
  cond = np.asarray(cond_ids).reshape(-1)
  first, second = [], []
  for c in np.unique(cond):
    rows = np.flatnonzero(cond == c)
    if len(rows) < 2 * per_condition:
      raise ValueError(f"condition {c} has {len(rows)} shapes, fewer than 2 x {per_condition}")
    first.append(rows[:per_condition])
    second.append(rows[per_condition:2 * per_condition])
  return np.concatenate(first), np.concatenate(second)


def mean_and_spread(results):
  """Mean and sample standard deviation (ddof 1; 0 for one result) over repeated evaluations.

  Args: results, a list of equally structured (nested) dicts of numbers or arrays, e.g. one
    evaluate_stage1 dict per sampling seed.
  Returns: (mean, std), two dicts of that structure with float64 leaves.
  """
  if isinstance(results[0], dict):
    pairs = {key: mean_and_spread([r[key] for r in results]) for key in results[0]}
    return {k: p[0] for k, p in pairs.items()}, {k: p[1] for k, p in pairs.items()}
  values = np.stack([np.asarray(r, np.float64) for r in results])
  std = values.std(0, ddof=1) if len(values) > 1 else np.zeros_like(values[0])
  return values.mean(0), std
