"""The checks a training config passes before its run writes anything (each error names the field).

The networks' own checks (checkpoints found and matching, compute dtype, DINOv2 width) run when
train() loads them, which also precedes every write; these are the rest: choices, counts, and the data
and mesh fields that would otherwise fail only once the data set is being built or the step traced.
"""
from __future__ import annotations

import math

from mdt_jax import stages
from mdt_jax.distill.spec import ObjectiveSpec
from mdt_jax.train import inputs

CHOICES = {"data.dataset": ("toy", "trellis"), "data.on_bad_data": ("raise", "skip")}
POSITIVE = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips",
            "batch_size_per_device", "batch_split", "lr")


def _get(config, dotted: str):
  for key in dotted.split("."):
    config = config[key]
  return config


def check(config, mesh):
  """Raises ValueError naming the first field of ``config`` that cannot work on ``mesh``."""
  ObjectiveSpec.of(config)  # the objective's choices, checked as the step builder will
  stage = stages.get(config.stage)
  if config.model.name and config.model.name not in stage.flow_models:
    raise ValueError(f"config.model.name {config.model.name!r} is not a flow of stage {stage.name!r} "
                     f"(config.stage); its flows: {stage.flow_models}")
  for field, allowed in CHOICES.items():
    if _get(config, field) not in allowed:
      raise ValueError(f"config.{field} must be one of {allowed}, got {_get(config, field)!r}")
  for field in POSITIVE:
    value = _get(config, field)
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
      raise ValueError(f"config.{field} must be a positive finite number, got {value!r}")
  if config.data.dataset == "trellis":
    inputs.check_trellis_fields(config)
    if config.data.condition not in inputs.TRAIN_CONDITIONS:
      raise ValueError(f"config.data.condition must be one of {inputs.TRAIN_CONDITIONS} for training, got "
                       f"{config.data.condition!r}")
  inputs.host_layout(config, mesh)  # batch_split divides the batch; the batch shards split over the hosts
  inputs.floored_capacity(config.data.min_capacity, "min_capacity")
  inputs.floored_capacity(config.data.min_coarse_capacity, "min_coarse_capacity")
