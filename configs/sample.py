"""Settings of two-stage sampling (``launch/sample.py``).

    python launch/sample.py --config=configs/sample.py:tiny --config.ss.steps=2
    python launch/sample.py --config=configs/sample.py:trellis_image_L --config.checkpoint_dir=/path/to/ckpts

Variants:
* ``trellis_image_L`` (default): TRELLIS-image-large's released checkpoints (``checkpoint_dir``
  holds ``NAME.json`` + ``NAME.safetensors``, or converted orbax directories of the same names),
  its sampler settings and its structured-latent normalisation.
* ``tiny``: the tiny random-weight checkpoints in ``tests/fixtures/trellis`` (they chain: SS flow
  8^3 x 8 -> decoder 16^3 -> SLat flow at 16^3), few steps, identity normalisation (they were not
  trained on normalised data), and tiny random-weight SLat decoders at 16^3 x 8 (Gaussians:
  ``tests/fixtures/eval_assets/gs_dec_16``, mesh: ``tests/fixtures/sample_assets/mesh_dec_16``); its shapes
  are random, the point is that everything runs.
* ``trellis2_512`` / ``trellis2_1024``: TRELLIS.2's latent pipeline (``pipeline="trellis2"``,
  mdt_jax/generation/trellis2_pipeline.py): its sparse-structure flow, TRELLIS's SS decoder, the
  shape and texture flows, voxels at 32^3 / 64^3, the upstream app's sampler settings. The flows are
  named as the upstream repository's configs/gen names them (override ``--config.shape_flow=...`` if
  the released files are named otherwise); the decoder is TRELLIS-image-large's.
* ``trellis2_tiny``: the ``512`` type on the tiny TRELLIS.2 fixtures (``tests/fixtures/trellis2``) and
  TRELLIS's tiny SS decoder (8^3 x 8 -> 16^3, pooled by 2 to 8^3 as 64^3 is to 32^3), same settings.

    python launch/sample.py --config=configs/sample.py:trellis2_tiny --out=/tmp/mdt_trellis2
    python launch/sample.py --config=configs/sample.py:trellis2_512 --config.checkpoint_dir=CKPTS \\
        --image=a.png --dinov3=DINOV3_DIR --out=/tmp/trellis2

3D assets: ``gaussian_decoder`` (and optionally ``mesh_decoder``), stems under ``checkpoint_dir`` (or
absolute paths; "" for none), add per shape the Gaussians' PLY, the mesh's GLB, a turntable mp4 and PNG
views rendered from the Gaussians (``mdt_jax.generation.sample_assets``); ``assets.resolution`` and
``assets.turntable_frames`` size the renders (0: 256 px / 30 frames on the CPU, 512 px / 120 frames on
an accelerator).
"""
from pathlib import Path

import ml_collections

# TRELLIS-image-large's pipeline.json: both stages use the guidance-interval Euler sampler with
# 25 steps, rescale_t 3 and guidance on t in [0.5, 1.0]; w = 7.5 for the sparse structure, 3 for
# the structured latents. Negative condition: zeros.
_TRELLIS_SS = dict(steps=25, cfg_strength=7.5, cfg_interval=(0.5, 1.0), rescale_t=3.0)
_TRELLIS_SLAT = dict(steps=25, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0)
# Per-channel statistics of the structured latents TRELLIS's SLat flow was trained on (pipeline.json's
# slat_normalization): generated feats are x0 * std + mean.
_TRELLIS_SLAT_MEAN = (-2.1687545776367188, -0.004347046371549368, -0.13352349400520325, -0.08418072760105133,
                      -0.5271206498146057, 0.7238689064979553, -1.1414450407028198, 1.2039363384246826)
_TRELLIS_SLAT_STD = (2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
                     2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338)

_FIXTURES = Path(__file__).resolve().parents[1] / "tests/fixtures"
# TRELLIS.2's app defaults (fixtures README, section 3): 12 steps per stage; guidance g (TRELLIS.2's
# convention, g = 1 + TRELLIS's w) 7.5 / 7.5 / 1 (the texture stage unguided); CFG-rescale 0.7 / 0.5 / 0;
# rescale_t 5 / 3 / 3. The guidance interval comes from the Hub's pipeline.json, which was not
# available: [0.6, 1.0] is our choice (it does not matter for the unguided texture stage).
_TRELLIS2 = dict(steps=12, cfg_interval=(0.6, 1.0), convention="trellis2")
_TRELLIS2_SETTINGS = dict(ss=dict(_TRELLIS2, cfg_strength=7.5, guidance_rescale=0.7, rescale_t=5.0),
                          shape=dict(_TRELLIS2, cfg_strength=7.5, guidance_rescale=0.5, rescale_t=3.0),
                          tex=dict(_TRELLIS2, cfg_strength=1.0, guidance_rescale=0.0, rescale_t=3.0))
# Empty statistics: the latents are written as the flows sample them (normalised). Set
# shape_mean/std and tex_mean/std from the released pipeline.json to write them un-normalised.
_NO_STATISTICS = dict(shape_mean=(), shape_std=(), tex_mean=(), tex_std=())
# cond_size: the DINOv3 image size of the structure's tokens; slat_cond_size: of the latents' (the
# upstream pipeline's get_cond: 512 for the SS flow and the 512 flows, 1024 for the 1024 flows).
_TRELLIS2_L = dict(pipeline="trellis2", checkpoint_dir="", ss_flow="ss_flow_img_dit_1_3B_64_bf16",
                   ss_decoder="ss_dec_conv3d_16l8_fp16", cond_size=512, compute_dtype="bfloat16",
                   **_TRELLIS2_SETTINGS, **_NO_STATISTICS)

VARIANTS = {
    "trellis_image_L": dict(
        checkpoint_dir="", ss_flow="ss_flow_img_dit_L_16l8_fp16", ss_decoder="ss_dec_conv3d_16l8_fp16",
        slat_flow="slat_flow_img_dit_L_64l8p2_fp16", gaussian_decoder="slat_dec_gs_swin8_B_64l8gs32_fp16",
        mesh_decoder="slat_dec_mesh_swin8_B_64l8m256c_fp16", ss=_TRELLIS_SS, slat=_TRELLIS_SLAT,
        slat_mean=_TRELLIS_SLAT_MEAN, slat_std=_TRELLIS_SLAT_STD, compute_dtype="float32"),
    "tiny": dict(
        checkpoint_dir=str(_FIXTURES / "trellis"),
        ss_flow="ss_flow", ss_decoder="ss_dec", slat_flow="slat_flow",
        gaussian_decoder=str(_FIXTURES / "eval_assets/gs_dec_16"),
        mesh_decoder=str(_FIXTURES / "sample_assets/mesh_dec_16"),
        ss=dict(steps=2, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0),
        slat=dict(steps=1, cfg_strength=0.0, cfg_interval=(0.0, 1.0), rescale_t=3.0),
        slat_mean=(0.0,) * 8, slat_std=(1.0,) * 8, compute_dtype="float32"),
    "trellis2_512": dict(_TRELLIS2_L, shape_flow="slat_flow_img2shape_dit_1_3B_512_bf16",
                         tex_flow="slat_flow_imgshape2tex_dit_1_3B_512_bf16", resolution=32, slat_cond_size=512),
    "trellis2_1024": dict(_TRELLIS2_L, shape_flow="slat_flow_img2shape_dit_1_3B_512_bf16_ft1024",
                          tex_flow="slat_flow_imgshape2tex_dit_1_3B_512_bf16_ft1024", resolution=64,
                          slat_cond_size=1024),
    "trellis2_tiny": dict(
        pipeline="trellis2", checkpoint_dir=str(_FIXTURES / "trellis2"), ss_flow="ss_flow",
        ss_decoder=str(_FIXTURES / "trellis/ss_dec"),
        shape_flow="shape_flow", tex_flow="tex_flow", resolution=8, cond_size=512, slat_cond_size=512,
        compute_dtype="float32", **_TRELLIS2_SETTINGS, **_NO_STATISTICS),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "trellis_image_L"
  if variant not in VARIANTS:
    raise ValueError(f"configs/sample.py: unknown variant {variant!r}; known: {sorted(VARIANTS)}")
  config = ml_collections.ConfigDict(VARIANTS[variant])
  config.variant = variant
  if "pipeline" not in config:   # "trellis": two stages; "trellis2": structure, shape, texture
    config.pipeline = "trellis"
  config.seed = 0
  config.num_samples = 2        # shapes to generate
  config.batch_size = 2         # conditions sampled together
  config.num_views = 4          # PNG views of the voxels per shape, at most 4 (0: no PNG; without a Gaussian decoder)
  config.assets = ml_collections.ConfigDict(dict(resolution=0, turntable_frames=0))   # 0: by platform
  return config
