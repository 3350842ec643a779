"""Evaluation of the toy benchmark: set metrics for stage 1; for stage 2, the exact error against the
conditional mean and set metrics of the feature distribution. And the paper's evaluation of 3D assets.

Modules, one job each:
  distance     1 - IoU between occupancy grids, exact (ties are exact).
  set_metrics  1-NNA, coverage, minimum matching distance on a distance matrix; their reading.
  decode       stage-1 latents -> occupancy (logits > 0) -> packed voxel coords, and back.
  stage1       evaluate_stage1: generated vs held-out occupancy per condition, family fidelity.
  stage2       evaluate_stage2: generated features vs the conditional mean of their own voxels' features.
  stage2_distribution  evaluate_stage2_distribution: generated vs real feature sets (FD, 1-NNA).
  pipeline     evaluate_pipeline: both stages of a two-stage sample.
  reference    the held-out sets (reference and second real set), in-memory splits, seed spread.
  round_trip   a TRELLIS checkpoint converted to orbax, run and converted back (launch/convert_and_run.py).
  stage1_sweep a stage-1 checkpoint at several step counts and guidance scales (launch/evaluate_ss.py).
  reference_report  the reference rows and the cost of one evaluation (launch/toy_eval_reference.py).
  scoring      sampling a toy set with generation.toy_sampling and scoring it per stage, the sets
               (EvalSets) and the stored results (Results).
  feature_distances  Fréchet and kernel (KID) distances between feature sets, float64.
  asset_protocol     the paper's render protocol, render sets on disk, DINOv2 features of renders.
  asset_evaluation   evaluate_assets: conditions x rows -> renders -> FD/KD_dinov2 (launch/evaluate_assets.py).
"""
from mdt_jax.eval.decode import coords_to_occupancy, decode_latents, occupancy_to_coords
from mdt_jax.eval.distance import iou_distance
from mdt_jax.eval.pipeline import evaluate_pipeline
from mdt_jax.eval.reference import ToySplit, mean_and_spread, split_halves, toy_split
from mdt_jax.eval.stage1 import evaluate_stage1
from mdt_jax.eval.stage2 import FEATURE_GROUPS, evaluate_stage2, target_features
from mdt_jax.eval.stage2_distribution import evaluate_stage2_distribution

__all__ = ["FEATURE_GROUPS", "ToySplit", "coords_to_occupancy", "decode_latents", "evaluate_pipeline",
           "evaluate_stage1", "evaluate_stage2", "evaluate_stage2_distribution", "iou_distance", "mean_and_spread", "occupancy_to_coords",
           "split_halves", "target_features", "toy_split"]
