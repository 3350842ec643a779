"""MDT-dist distillation configs: ``--config=configs/distill.py:<variant>``.

``ss_flow_L`` / ``slat_flow_L``: the published settings (MDT-dist's json configs) for TRELLIS-image-
large. ``ss_toy`` / ``slat_toy``: the toy benchmark on a 2-core CPU, starting from the shipped toy
teachers; their values are tuned for the toy, each with why. ``trellis2_{ss,shape,tex}_tiny``:
TRELLIS.2's sparse-structure, shape and texture stages at the size of its fixtures (the teachers are
the fixture checkpoints), for tests of the objective on TRELLIS.2's networks; their batches are
synthetic (no dataset yields TRELLIS.2 latents yet).
"""
from pathlib import Path

import ml_collections

from configs import common, models

_REPO = Path(__file__).resolve().parents[1]

VARIANTS = ("ss_toy", "slat_toy", "ss_flow_L", "slat_flow_L", "trellis2_ss_tiny", "trellis2_shape_tiny",
            "trellis2_tex_tiny")
# Per variant: the model and, for the published ones, TRELLIS-image-large's checkpoint, learning rate and
# latents' folder (MDT-dist's json configs).
MODELS = {"ss_toy": models.SS_TOY, "slat_toy": models.SLAT_TOY, "ss_flow_L": models.SS_FLOW_L,
          "slat_flow_L": models.SLAT_FLOW_L}
PUBLISHED = {
    "ss_flow_L": dict(teacher_checkpoint="ckpts/ss_flow_img_dit_L_16l8_fp16", lr=4e-8,
                      latent_model="ss_enc_conv3d_16l8_fp16"),
    "slat_flow_L": dict(teacher_checkpoint="ckpts/slat_flow_img_dit_L_64l8p2_fp16", lr=1e-8,
                        latent_model="dinov2_vitl14_reg_slat_enc_swin8_B_64l8_fp16"),
}
TOY_TEACHERS = {"ss_toy": str(_REPO / "teachers/ss_toy"), "slat_toy": str(_REPO / "teachers/slat_toy")}
# TRELLIS.2 stage -> (model config, the fixture checkpoint of that config, teacher guidance g, our stage:
# dense or sparse latents).
_TRELLIS2_TINY = {"ss": (models.TRELLIS2_SS_TINY, "ss_flow", 7.5, "ss"),
                  "shape": (models.TRELLIS2_SHAPE_TINY, "shape_flow", 7.5, "slat"),
                  "tex": (models.TRELLIS2_TEX_TINY, "tex_flow", 1.0, "slat")}


def get_config(variant: str = "ss_toy") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"configs/distill.py: unknown variant {variant!r}; known: {VARIANTS}")
  config = common.base_config()  # objective vm_vd, discrete, D 0.01, w 40/100, lambda 1/1, d_norm, LN(1, 1)
  config.student_init = "teacher"     # the student starts as a copy of the teacher, as in the paper.
  if variant.startswith("trellis2_"):
    return _trellis2_tiny(config, variant.split("_")[1])
  config.stage = variant.split("_")[0]
  config.model = ml_collections.ConfigDict(MODELS[variant])
  if variant in PUBLISHED:
    published = PUBLISHED[variant]
    config.teacher_checkpoint = published["teacher_checkpoint"]
    config.lr = published["lr"]
    config.weight_decay = 0.0
    config.batch_size_per_device = 8
    config.batch_split = 2
    config.ema_rates = (0.9999,)
    config.grad_clip.max_norm = 1.0
    config.grad_clip.percentile = 95.0
    config.p_uncond = 0.0
    config.compute_dtype = "bfloat16"
    config.data.dataset = "trellis"
    config.data.condition = "image"   # views encoded by the frozen DINOv2 inside the step.
    config.dinov2_checkpoint = "ckpts/dinov2_vitl14_reg4_pretrain.pth"  # facebookresearch/dinov2's file.
    config.data.min_aesthetic_score = 4.5  # TRELLIS's released training configs.
    config.data.latent_model = published["latent_model"]
    config.total_steps = 20000
    config.log_every = 100
    config.checkpoint_every = 1000
    config.keep_period = 5000
    return config

  config.teacher_checkpoint = TOY_TEACHERS[variant]
  # Unguided targets. Guided ones (w 0.5, the stage-1 teacher's best) raise the 1-step student's family
  # fidelity (0.63 -> 0.73) and cost 1-NNA (0.715 -> 0.752); stage 2's teacher is best unguided
  # (docs/toy_benchmark.md, teachers/metrics.md).
  config.cfg_teacher_vm = 0.0
  config.cfg_teacher_vd = 0.0
  # d_norm divides du/dt by its norm over all latent elements: with 4,096 elements each entry is
  # ~1/64 and the VM target collapses to the teacher's velocity (stage-1 1-step 1-NNA 0.853 with it,
  # naive Euler's 0.859; 0.715 without: docs/toy_benchmark.md). The published value stays in the
  # *_L variants.
  config.d_norm = False
  config.lr = 1e-4                    # 1e-3 trained the teacher; distillation starts from it: smaller.
  # Short runs need a fast EMA: after 80 steps an EMA of 0.99 still holds 0.99^80 = 45% of the
  # teacher (stage-1 1-step 1-NNA 0.79-0.81 against 0.68-0.72 raw; docs/toy_benchmark.md).
  config.ema_rates = (0.9,)
  if variant == "ss_toy":
    config.batch_size_per_device = 32
  else:
    config.batch_size_per_device = 16
    config.data.min_capacity = 6144      # one compiled step for nearly every batch: see configs/teacher.py.
    config.data.min_coarse_capacity = 1536
  config.total_steps = 300
  config.log_every = 25
  config.checkpoint_every = 100
  config.snapshot_steps = (4, 2, 1)
  return config


def _trellis2_tiny(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """A TRELLIS.2 stage at fixture size; the objective is the published one (VM+VD, discrete, D 0.01,
  d_norm, LN(1, 1) draws) with TRELLIS.2's guidance convention."""
  model, checkpoint, guidance, config.stage = _TRELLIS2_TINY[stage]
  config.model = ml_collections.ConfigDict(model)
  config.teacher_checkpoint = str(_REPO / "tests/fixtures/trellis2" / checkpoint)
  # The targets guide the teacher as TRELLIS.2's sampler does, g v_c + (1 - g) v_u with zeros as the
  # negative condition: g 7.5 for the sparse-structure and shape stages, 1 (no guidance) for the
  # texture stage, the upstream app's defaults, so that the student learns the sampler users run.
  # (CFG-rescale acts on the sampler's x0 and is not part of the targets.)
  config.guidance_convention = "trellis2"
  config.cfg_teacher_vm = guidance
  config.cfg_teacher_vd = guidance
  config.batch_size_per_device = 2
  config.total_steps = 2
  config.log_every = 1
  return config
