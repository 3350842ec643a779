"""MDT-dist distillation configs: ``--config=configs/distill.py:<variant>``.

``ss_flow_L`` / ``slat_flow_L``: the published settings (MDT-dist's json configs) for TRELLIS-image-
large. ``ss_toy`` / ``slat_toy``: the toy benchmark on a 2-core CPU, starting from the shipped toy
teachers; their values are tuned for the toy, each with why. ``trellis2_{ss,shape,tex}_tiny``:
TRELLIS.2's sparse-structure, shape and texture stages at the size of its fixtures (the teachers are
the fixture checkpoints), for tests of the objective on TRELLIS.2's networks; their batches are
synthetic (no dataset yields TRELLIS.2 latents yet). ``trellis2_{ss,shape,tex}_L``: the same stages at
full size (the ``512`` pipeline's flows, the teachers named as released), for the dry run and the
sharded memory estimate (``launch/train_memory.py --variants=trellis2_shape_L``); their condition is
precomputed DINOv3 tokens (``data.condition="tokens"``, ``cond_tokens`` of them) and, with no TRELLIS.2
dataset here, ``data.dataset`` names one this repository cannot read yet.
"""
from pathlib import Path

import ml_collections

from configs import common, models

_REPO = Path(__file__).resolve().parents[1]

VARIANTS = ("ss_toy", "slat_toy", "ss_flow_L", "slat_flow_L", "trellis2_ss_tiny", "trellis2_shape_tiny",
            "trellis2_tex_tiny", "trellis2_ss_L", "trellis2_shape_L", "trellis2_tex_L")
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
# The full-size stages: model config, the released checkpoint (TRELLIS.2's ckpts/ names), teacher
# guidance g, our stage and the learning rate.
_TRELLIS2_L = {"ss": (models.TRELLIS2_SS_L, "ckpts/ss_flow_img_dit_1_3B_64_bf16", 7.5, "ss", 4e-8),
               "shape": (models.TRELLIS2_SHAPE_L, "ckpts/slat_flow_img2shape_dit_1_3B_512_bf16", 7.5, "slat", 1e-8),
               "tex": (models.TRELLIS2_TEX_L, "ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16", 1.0, "slat", 1e-8)}


def get_config(variant: str = "ss_toy") -> ml_collections.ConfigDict:
  if variant not in VARIANTS:
    raise ValueError(f"configs/distill.py: unknown variant {variant!r}; known: {VARIANTS}")
  config = common.base_config()  # objective vm_vd, discrete, D 0.01, w 40/100, lambda 1/1, d_norm, LN(1, 1)
  config.student_init = "teacher"     # the student starts as a copy of the teacher, as in the paper.
  if variant.startswith("trellis2_"):
    _, stage, size = variant.split("_")
    return _trellis2_tiny(config, stage) if size == "tiny" else _trellis2_large(config, stage)
  config.stage = variant.split("_")[0]
  config.model = ml_collections.ConfigDict(MODELS[variant])
  if variant in PUBLISHED:
    published = PUBLISHED[variant]
    config.teacher_checkpoint = published["teacher_checkpoint"]
    _published_run(config, published["lr"])
    config.data.dataset = "trellis"
    config.data.condition = "image"   # views encoded by the frozen DINOv2 inside the step.
    config.dinov2_checkpoint = "ckpts/dinov2_vitl14_reg4_pretrain.pth"  # facebookresearch/dinov2's file.
    config.data.min_aesthetic_score = 4.5  # TRELLIS's released training configs.
    config.data.latent_model = published["latent_model"]
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


def _trellis2_large(config: ml_collections.ConfigDict, stage: str) -> ml_collections.ConfigDict:
  """A TRELLIS.2 stage at full size: the published objective (VM+VD, discrete, D 0.01, d_norm, LN(1, 1)
  draws) and the published run's settings of the TRELLIS stage it corresponds to."""
  model, checkpoint, guidance, config.stage, lr = _TRELLIS2_L[stage]
  config.model = ml_collections.ConfigDict(model)
  # Rematerialised blocks: without, the sparse-structure step keeps 217 GiB of activations a device
  # (4,096 tokens x 30 blocks x the objective's passes at 4 a micro-batch; launch/train_memory.py).
  # The sparse flows (ElasticSLatFlowModel) always are.
  config.model.args.use_checkpoint = True
  config.teacher_checkpoint = checkpoint
  # As the tiny variants: the targets guide the teacher as TRELLIS.2's sampler does (g v_c + (1 - g) v_u,
  # zeros as the negative condition) with the upstream app's g: 7.5 for the sparse structure and the
  # shape, 1 (unguided) for the texture, so that the 1-step student learns the guided sampler users run.
  # (MDT-dist's published TRELLIS runs use w 40 / 100; no run on TRELLIS.2's teachers is published.)
  config.guidance_convention = "trellis2"
  config.cfg_teacher_vm = guidance
  config.cfg_teacher_vd = guidance
  # No TRELLIS.2 run has been published: TRELLIS-image-large's published values for the same kind of
  # stage (dense 4e-8, sparse 1e-8; batch 8 per device in 2 micro-batches, EMA 0.9999, clipping).
  # bfloat16 compute as TRELLIS.2's *_bf16 training (mixed precision, float32 master weights).
  _published_run(config, lr)
  config.data.dataset = "trellis2"
  config.data.condition = "tokens"
  # DINOv3 ViT-L/16 tokens of a 512 x 512 view: cls + 4 registers + (512 / 16)^2 patches.
  config.cond_tokens = 1 + 4 + (512 // 16) ** 2
  return config


def _published_run(config: ml_collections.ConfigDict, lr: float) -> None:
  """MDT-dist's published run settings for TRELLIS-image-large (its json configs), but the learning rate."""
  config.lr = lr
  config.weight_decay = 0.0
  config.batch_size_per_device = 8
  config.batch_split = 2
  config.ema_rates = (0.9999,)
  config.grad_clip.max_norm = 1.0
  config.grad_clip.percentile = 95.0
  config.p_uncond = 0.0
  config.compute_dtype = "bfloat16"
  config.total_steps = 20000
  config.log_every = 100
  config.checkpoint_every = 1000
  config.keep_period = 5000
