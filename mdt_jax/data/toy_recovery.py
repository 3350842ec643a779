"""Family recovery: does a shape's nearest neighbour by IoU in a reference set share its family?

Used to check that the toy's families are recognisable from occupancy alone (the test split against
the train split), and by evaluation to classify generated shapes.
"""
import numpy as np


def nearest_by_iou(query, reference, chunk=4096):
  """Index of the reference shape with the highest IoU, per query: int64 [M].

  Args:
    query: bool [M, R, R, R]; reference: bool [K, R, R, R] (K >= 1).
    chunk: reference shapes compared per matrix product (bounds memory at M x chunk floats).
  Intersections are counted by a float32 matrix product, exact for grids below 2^24 voxels.
  """
  q = np.asarray(query, bool).reshape(len(query), -1)
  r = np.asarray(reference, bool).reshape(len(reference), -1)
  if q.shape[1] != r.shape[1]:
    raise ValueError(f"grid sizes differ: query {query.shape[1:]}, reference {reference.shape[1:]}")
  qf = q.astype(np.float32)
  q_count = qf.sum(1, keepdims=True)
  best = np.full(len(q), -1.0)
  best_index = np.zeros(len(q), np.int64)
  for start in range(0, len(r), chunk):
    rf = r[start:start + chunk].astype(np.float32)
    inter = qf @ rf.T
    union = q_count + rf.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    arg = iou.argmax(1)
    value = iou[np.arange(len(q)), arg]
    better = value > best
    best[better] = value[better]
    best_index[better] = start + arg[better]
  return best_index


def family_recovery_rate(query, query_family, reference, reference_family):
  """Fraction of query shapes whose IoU nearest neighbour in `reference` has the same family."""
  nearest = nearest_by_iou(query, reference)
  return float(np.mean(np.asarray(reference_family)[nearest] == np.asarray(query_family)))
