"""Toy records (toy_builder) -> model inputs, as `decode(record, rng)` for the pipeline.

stage "ss" (sparse structure, dense):
  x0       float32 [R/2, R/2, R/2, 8]  fold.occupancy_to_latent of the occupancy, channels-last
stage "slat" (structured latent, sparse; pair with pipeline.SparseCollate):
  coords   int32 [N, 3]   occupied voxels (x, y, z) in [0, R)
  feats    float32 [N, 8] toy_features.toy_features of (occupancy, cond_id, colour_gradient)
both stages:
  cond     float32 [L, C] toy_condition.condition_tokens(cond_id) for the table (L, C, table_seed)
  cond_id  int32
The toy has no per-example randomness (pose and colour are part of the data), so `rng` is unused.
"""
import dataclasses

import numpy as np

from mdt_jax import stages
from mdt_jax.data import toy_condition
from mdt_jax.data.fold import occupancy_to_latent
from mdt_jax.data.toy_features import toy_features


@dataclasses.dataclass(frozen=True)
class ToyInputs:
  """Decoder of toy records for one stage (a Stage or its name) and one condition table."""
  stage: stages.Stage | str = "ss"
  num_tokens: int = toy_condition.DEFAULT_NUM_TOKENS
  channels: int = toy_condition.DEFAULT_CHANNELS
  table_seed: int = toy_condition.DEFAULT_TABLE_SEED

  def __post_init__(self):
    object.__setattr__(self, "stage", stages.get(self.stage, field="stage"))

  def __call__(self, record, rng=None):
    del rng
    cond_id = int(record["cond_id"])
    out = {"cond": toy_condition.condition_tokens(cond_id, self.num_tokens, self.channels,
                                                  self.table_seed),
           "cond_id": np.int32(cond_id)}
    if self.stage.sparse:
      out["coords"], out["feats"] = toy_features(record["occupancy"], cond_id, record["colour_gradient"])
    else:
      out["x0"] = occupancy_to_latent(record["occupancy"])
    return out
