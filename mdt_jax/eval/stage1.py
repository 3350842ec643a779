"""Stage-1 (sparse structure) evaluation: generated occupancy sets against held-out real ones.

For every condition of the generated set, its shapes G are compared with the reference shapes R of
the same condition under the 1 - IoU distance (distance.iou_distance): 1-NNA, COV and MMD
(set_metrics, where their reading is documented). Family fidelity is the fraction of generated
shapes whose IoU nearest neighbour in a labelled set (the training shapes, or else the reference
set) has the requested family (toy_recovery.nearest_by_iou); a generated shape that overlaps no
labelled shape (an empty one, say) has no nearest neighbour and counts as unfaithful. Every figure
is computed per condition, then averaged over conditions with equal weight.

Cost (2-core CPU under load, 24 conditions x 16 vs 16 at R = 16): the set metrics take ~0.02 s;
fidelity classified by the reference set 0.05-0.2 s, by the default dataset's 20,000 training
shapes 2-3 s (one float32 matrix product of 384 x 4,096 by 4,096 x 20,000). A smaller labelled set
is faster but a weaker classifier: real test shapes find their family 0.90 of the time among the
20,000 training shapes, 0.78 among the first 2,400.
"""
import numpy as np

from mdt_jax.data.toy_condition import split_condition
from mdt_jax.data.toy_recovery import nearest_by_iou
from mdt_jax.eval import set_metrics
from mdt_jax.eval.distance import iou_distance


def _grids(name, occupancy, resolution=None):
  occupancy = np.asarray(occupancy, bool)
  if occupancy.ndim != 4 or len(set(occupancy.shape[1:])) != 1:
    raise ValueError(f"{name} must be bool [N, R, R, R], got shape {occupancy.shape}")
  if resolution is not None and occupancy.shape[1] != resolution:
    raise ValueError(f"{name} has R = {occupancy.shape[1]}, the generated set R = {resolution}")
  return occupancy


def _ids(name, ids, n):
  ids = np.asarray(ids).astype(np.int64).reshape(-1)
  if len(ids) != n:
    raise ValueError(f"{name} has {len(ids)} entries for {n} shapes")
  return ids


def evaluate_stage1(generated_occ, cond_ids, reference_occ, reference_cond_ids, train_occ=None,
                    train_family=None):
  """Set metrics of generated occupancies per condition, averaged over conditions.

  Args:
    generated_occ: bool [N, R, R, R], e.g. decode.decode_latents of sampled stage-1 latents.
    cond_ids: int [N], the condition each shape was generated for (toy_condition.condition_id).
    reference_occ: bool [M, R, R, R] held-out real shapes; reference_cond_ids: int [M]. Every
      condition of `cond_ids` must occur here; reference conditions not generated are ignored.
    train_occ, train_family: bool [K, R, R, R] and int [K], the labelled set for family fidelity
      (both or neither); default the reference set, labelled with its conditions' families.
  Returns:
    a dict of floats: `1nna`, `cov`, `mmd`, `fidelity` (means over conditions), `1nna_exchangeable`
    (the expected 1-NNA of a real set of the same sizes: the floor to read `1nna` against),
    `num_conditions`, `num_generated`, `num_reference` (shapes used), `num_labelled` (the
    fidelity set's size); and `per_condition`, a dict of arrays [C] over the generated conditions
    in increasing order: `cond_id`, `1nna`, `cov`, `mmd`, `fidelity`, `num_generated`,
    `num_reference`.
  """
  generated = _grids("generated_occ", generated_occ)
  resolution = generated.shape[1]
  cond = _ids("cond_ids", cond_ids, len(generated))
  reference = _grids("reference_occ", reference_occ, resolution)
  ref_cond = _ids("reference_cond_ids", reference_cond_ids, len(reference))
  if len(generated) == 0:
    raise ValueError("generated_occ is empty")
  conditions = np.unique(cond)
  missing = np.setdiff1d(conditions, ref_cond)
  if len(missing):
    raise ValueError(f"conditions {missing.tolist()} have no reference shapes")
  if (train_occ is None) != (train_family is None):
    raise ValueError("give train_occ and train_family together, or neither")
  if train_occ is None:
    labelled, labels = reference, split_condition(ref_cond)[0]
  else:
    labelled = _grids("train_occ", train_occ, resolution)
    labels = _ids("train_family", train_family, len(labelled))

  nearest = nearest_by_iou(generated, labelled)
  overlaps = np.any(generated & labelled[nearest], axis=(1, 2, 3))
  hit = overlaps & (np.asarray(labels)[nearest] == split_condition(cond)[0])
  rows = {key: [] for key in ("1nna", "cov", "mmd", "fidelity", "num_generated", "num_reference")}
  exchangeable = []
  for c in conditions:
    g, r = generated[cond == c], reference[ref_cond == c]
    d = iou_distance(np.concatenate([g, r]))
    n = len(g)
    d_gg, d_rr, d_gr = d[:n, :n], d[n:, n:], d[:n, n:]
    rows["1nna"].append(set_metrics.one_nna(d_gg, d_rr, d_gr))
    rows["cov"].append(set_metrics.coverage(d_gr))
    rows["mmd"].append(set_metrics.minimum_matching_distance(d_gr))
    rows["fidelity"].append(float(hit[cond == c].mean()))
    rows["num_generated"].append(n)
    rows["num_reference"].append(len(r))
    exchangeable.append(set_metrics.exchangeable_1nna(n, len(r)))
  per_condition = {"cond_id": conditions, **{key: np.asarray(value) for key, value in rows.items()}}
  out = {key: float(np.mean(per_condition[key])) for key in ("1nna", "cov", "mmd", "fidelity")}
  out.update({"1nna_exchangeable": float(np.mean(exchangeable)), "num_conditions": len(conditions),
              "num_generated": len(generated), "num_reference": int(per_condition["num_reference"].sum()),
              "num_labelled": len(labelled), "per_condition": per_condition})
  return out
