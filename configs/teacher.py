"""Flow-matching (teacher) training configs: ``--config=configs/teacher.py:<variant>``.

Variants: ``ss_toy`` and ``slat_toy`` train the toy teachers of each stage on the toy dataset
(built locally on first use) on a 2-core CPU.
"""
import ml_collections

from configs import common, models

VARIANTS = ("ss_toy", "slat_toy")


def get_config(variant: str = "ss_toy") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"configs/teacher.py: unknown variant {variant!r}; known: {VARIANTS}")
  config = common.base_config()
  config.objective = "fm"
  config.student_init = ""            # a teacher is trained from scratch ...
  config.p_uncond = 0.1               # ... with condition dropout, so it can be guided.
  config.lr = 1e-3                    # AdamW 1e-3 / EMA 0.999 / batch 32 worked in the feasibility study.
  config.ema_rates = (0.999,)
  config.batch_size_per_device = 32
  config.total_steps = 1500           # ss_toy: 0.4-0.85 steps/s on the 2-core CPU (load 2-7).
  config.log_every = 50
  config.checkpoint_every = 250
  config.keep_period = 250            # every checkpoint stays: launch/evaluate_run.py draws the curve from them.
  config.snapshot_steps = (25, 1)
  if variant == "ss_toy":
    config.stage = "ss"
    config.model = ml_collections.ConfigDict(models.SS_TOY)
  else:
    config.stage = "slat"
    config.model = ml_collections.ConfigDict(models.SLAT_TOY)
    config.batch_size_per_device = 16
    config.total_steps = 1000           # 0.4-0.85 steps/s on the 2-core CPU (load 2-7).
    # 16 toy shapes hold ~3,400 voxels (99th percentile 5,800) and ~720 2x parents (99.9th: 1,250):
    # these floors give one compiled step for nearly every batch (each new bucket recompiled for
    # ~1.5 min on the loaded 2-core CPU) at the price of ~1.8x padding.
    config.data.min_capacity = 6144
    config.data.min_coarse_capacity = 1536
  return config
