"""Stage-2 (structured latent) evaluation: generated voxel features against their conditional mean.

The toy's features (data.toy_features) are a function of the occupancy and the condition, plus a
random per-shape colour gradient of mean zero. So a generated structured latent (features on a set
of voxels) has an exact conditional mean: the features `toy_features` computes on the occupancy
those voxels form, for the requested condition, with a zero colour gradient. Channels 0-4 have no
randomness, so their error is exact; the colour error also counts the colour's own spread, and
like any error against a mean it rewards predicting the mean: score the distribution with
eval.stage2_distribution. The error is measured in the feature units of toy_features (each channel
roughly unit variance over the data), per channel group (FEATURE_GROUPS) and over all 8 channels.

Weighting: a shape's mean squared error is its mean over voxels and the group's channels; a
condition's is the mean over its shapes; the aggregate is the mean over conditions; RMSE is the
square root. Empty shapes have nothing to score: they are counted (`num_empty`) and left out; a
condition with only empty shapes is NaN in `per_condition` and left out of the aggregate.
`target_rms` is the same statistic of the target itself, i.e. the RMSE of predicting zeros, the
scale to read `rmse` against.
"""
import numpy as np

from mdt_jax.data.toy_features import FEATURE_CHANNELS, toy_features
from mdt_jax.eval.decode import coords_to_occupancy

FEATURE_GROUPS = {"height": (0,), "depth": (1,), "normal": (2, 3, 4), "colour": (5, 6, 7)}
assert sorted(sum(FEATURE_GROUPS.values(), ())) == list(range(len(FEATURE_CHANNELS)))


def target_features(coords, cond_id, resolution):
  """The conditional mean of one shape's features (toy_features, zero colour gradient), aligned with its rows.

  Args:
    coords: int [n, 3] (x, y, z) voxels of one shape, any order, no repeats.
    cond_id: its condition id; resolution: the grid side R.
  Returns:
    float32 [n, 8]: row i is toy_features of the occupancy of `coords` at voxel coords[i].
  """
  coords = np.asarray(coords, np.int64)
  if coords.ndim != 2 or coords.shape[1] != 3:
    raise ValueError(f"coords must be [n, 3] (x, y, z), got shape {coords.shape}")
  occupancy = coords_to_occupancy(np.pad(coords, ((0, 0), (1, 0))), 1, resolution)[0]
  if occupancy.sum() != len(coords):
    raise ValueError(f"coords repeat a voxel ({len(coords) - occupancy.sum()} repeats)")
  target_coords, target = toy_features(occupancy, cond_id)
  # toy_features lists the voxels in lexicographic order, i.e. by increasing linear index.
  index = np.searchsorted(np.ravel_multi_index(target_coords.T, occupancy.shape),
                          np.ravel_multi_index(coords.T, occupancy.shape))
  return target[index]


def _group_mse(err):
  """float [n, 8] -> {"all": mean of squares, group: mean over the group's channels}."""
  per_channel = (err.astype(np.float64) ** 2).mean(0)
  return {"all": per_channel.mean(), **{g: per_channel[list(c)].mean() for g, c in FEATURE_GROUPS.items()}}


def evaluate_stage2(coords, feats, cond_ids, resolution):
  """Feature error of generated structured latents against the conditional mean of their own voxels' features.

  Args:
    coords: int [N, 4] (b, x, y, z) in TRELLIS's packed layout (SparseTensor.to_packed or
      generation's output); rows of a sample in any order, no voxel repeated within a sample.
    feats: float [N, 8], the generated features of each row, in toy_features units.
    cond_ids: int [B], the condition of each sample b (B = the batch size; a sample without rows
      is an empty shape).
    resolution: the grid side R.
  Returns:
    a dict of floats: `rmse` (all channels) and `rmse_<group>` for FEATURE_GROUPS, `target_rms`
    and `target_rms_<group>` (same weighting, the target's own size), `num_shapes`, `num_empty`,
    `num_voxels`, `num_conditions`; and `per_condition`, a dict of arrays [C] over the conditions
    in increasing order: `cond_id`, `num_shapes`, and every rmse / target_rms key.
  """
  coords = np.asarray(coords)
  feats = np.asarray(feats)
  cond = np.asarray(cond_ids).astype(np.int64).reshape(-1)
  if coords.ndim != 2 or coords.shape[1] != 4 or feats.shape != (len(coords), len(FEATURE_CHANNELS)):
    raise ValueError(f"expected coords [N, 4] and feats [N, {len(FEATURE_CHANNELS)}], "
                     f"got {coords.shape} and {feats.shape}")
  if np.any((coords[:, 0] < 0) | (coords[:, 0] >= len(cond))):
    raise ValueError(f"sample index outside [0, {len(cond)}) in coords[:, 0]")
  if not np.all(np.isfinite(feats)):
    raise ValueError("feats hold non-finite values")
  order = np.argsort(coords[:, 0], kind="stable")
  bounds = np.searchsorted(coords[order, 0], np.arange(len(cond) + 1))
  groups = ("all", *FEATURE_GROUPS)
  keys = [name if g == "all" else f"{name}_{g}" for name in ("rmse", "target_rms") for g in groups]
  shape_mse = np.full((len(cond), len(keys)), np.nan)
  for b in range(len(cond)):
    rows = order[bounds[b]:bounds[b + 1]]
    if len(rows):
      target = target_features(coords[rows, 1:], cond[b], resolution)
      error, size = _group_mse(feats[rows] - target), _group_mse(target)
      shape_mse[b] = [error[g] for g in groups] + [size[g] for g in groups]
  empty = np.isnan(shape_mse[:, 0])
  conditions = np.unique(cond)
  condition_mse = np.full((len(conditions), len(keys)), np.nan)
  for i, c in enumerate(conditions):
    part = shape_mse[(cond == c) & ~empty]
    if len(part):
      condition_mse[i] = part.mean(0)
  scored = condition_mse[~np.isnan(condition_mse[:, 0])]
  aggregate = np.sqrt(scored.mean(0)) if len(scored) else np.full(len(keys), np.nan)
  out = {key: float(value) for key, value in zip(keys, aggregate)}
  out.update({"num_shapes": len(cond), "num_empty": int(empty.sum()),
              "num_voxels": len(coords), "num_conditions": len(conditions)})
  out["per_condition"] = {"cond_id": conditions, "num_shapes": np.array([np.sum(cond == c) for c in conditions]),
                          **{key: np.sqrt(condition_mse[:, i]) for i, key in enumerate(keys)}}
  return out
