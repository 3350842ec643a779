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
  config.total_steps = 2000           # ~10 minutes on the 2-core CPU for ss_toy.
  config.log_every = 50
  config.checkpoint_every = 250
  config.snapshot_steps = (25, 1)
  if variant == "ss_toy":
    config.stage = "ss"
    config.model = ml_collections.ConfigDict(models.SS_TOY)
  else:
    config.stage = "slat"
    config.model = ml_collections.ConfigDict(models.SLAT_TOY)
    config.batch_size_per_device = 16
  return config
