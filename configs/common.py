"""Fields every training config has (docs/design.md, Config names); variants edit a copy of this base."""
from __future__ import annotations

import ml_collections

from mdt_jax.distill.config import objective_config


def base_config() -> ml_collections.ConfigDict:
  """Defaults shared by teacher (flow-matching) and distillation runs; see the field comments."""
  config = objective_config()  # objective, distill_type, guidance, lambdas, d_norm, t_schedule, ...
  config.stage = "ss"                 # "ss" (dense sparse-structure latents) or "slat" (sparse).
  config.model = ml_collections.ConfigDict()  # TRELLIS {"name", "args"} for a fresh student.
  config.model.name = ""
  config.model.args = ml_collections.ConfigDict()
  config.teacher_checkpoint = ""      # TRELLIS stem or our orbax dir; distillation only.
  config.student_init = "teacher"     # "teacher", a checkpoint path, or "" (fresh init from config.model).
  config.dinov2_checkpoint = ""       # frozen image encoder (data.condition="image"): .safetensors or .pth.
  config.dinov2_config = "dinov2_vitl14_reg"  # its preset name, or a json holding constructor_args.
  config.compute_dtype = "float32"    # trunk compute dtype: float32 | bfloat16 (params stay float32).

  config.lr = 1e-4
  config.weight_decay = 0.0
  config.adam_b1 = 0.9
  config.adam_b2 = 0.999
  config.ema_rates = (0.999,)
  config.grad_clip = ml_collections.ConfigDict(dict(max_norm=1.0, percentile=95.0, buffer_size=1000))

  config.batch_size_per_device = 8     # instances per batch shard per step (TRELLIS's batch_size_per_gpu) ...
  config.batch_split = 1              # ... in this many micro-batches (gradient accumulation), as TRELLIS.
  config.data = ml_collections.ConfigDict(dict(
      dataset="toy",                  # "toy" (built locally, no download) or "trellis".
      data_dir="",                    # TFDS data dir; "" -> <workdir>/tfds.
      toy_config="r16",               # toy builder config (resolution).
      toy_num_train=0,                # 0: the toy config's train split; n: a smaller one of n shapes (quick runs).
      root="",                        # TRELLIS-layout dataset root (dataset="trellis").
      latent_model="",                # TRELLIS latent model folder name.
      condition="image",              # trellis: image (views encoded in the step) | tokens (precomputed).
      token_dir="",                   # precomputed DINOv2 tokens (condition="tokens").
      max_num_voxels=32768,           # per-instance filter (SLat), as TRELLIS's dataset.
      min_capacity=0,                 # sparse: rows per device at least this (a bucket_capacity value) ...
      min_coarse_capacity=0,          # ... and coarse rows at least this: fewer distinct programs to compile.
      min_aesthetic_score=ml_collections.config_dict.placeholder(float),  # None: no aesthetic filter.
      on_bad_data="raise",            # trellis build: "raise" (name the file) or "skip" (and count).
      num_threads=2))

  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))  # -1: all remaining devices.
  config.total_steps = 100
  config.log_every = 10
  config.checkpoint_every = 50
  config.keep_checkpoints = 3         # the last N ...
  config.keep_period = 0              # ... plus every k-th step forever (0: none).
  config.max_consecutive_skips = 10   # this many non-finite steps in a row (none applied) stop the run.
  config.snapshot_every = 0           # sample snapshots (0: only at the end of the run).
  config.snapshot_steps = (25, 4, 2, 1)
  config.snapshot_count = 4           # shapes per snapshot.
  config.seed = 0
  return config
