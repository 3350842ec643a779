"""End-to-end evaluation of the two-stage pipeline: the structure, then the features on it."""
import numpy as np

from mdt_jax.eval.decode import coords_to_occupancy
from mdt_jax.eval.stage1 import evaluate_stage1
from mdt_jax.eval.stage2 import evaluate_stage2


def evaluate_pipeline(coords, feats, cond_ids, resolution, reference_occ, reference_cond_ids,
                      train_occ=None, train_family=None):
  """Stage-1 quality of the generated occupancy and stage-2 feature error given that occupancy.

  Args:
    coords int [N, 4] (b, x, y, z), feats float [N, 8], cond_ids int [B]: the pipeline's output in
      TRELLIS's packed layout (as stage2.evaluate_stage2 takes it); the occupancy is the set of
      voxels of each sample (a sample without rows is an empty shape).
    resolution: the grid side R. reference_occ, reference_cond_ids, train_occ, train_family: as
      stage1.evaluate_stage1.
  Returns:
    {"stage1": evaluate_stage1 of the occupancy, "stage2": evaluate_stage2 of the features}.
  """
  cond = np.asarray(cond_ids)
  occupancy = coords_to_occupancy(coords, len(cond), resolution)
  return {"stage1": evaluate_stage1(occupancy, cond, reference_occ, reference_cond_ids, train_occ, train_family),
          "stage2": evaluate_stage2(coords, feats, cond, resolution)}
