"""Settings of the asset evaluation (``launch/evaluate_assets.py``, ``mdt_jax.eval.asset_evaluation``).

    python launch/evaluate_assets.py --config=configs/evaluate_assets.py:tiny --out=/tmp/eval_tiny
    python launch/evaluate_assets.py --config=configs/evaluate_assets.py:toys4k --out=/tmp/eval \\
        --config.conditions.trellis_root=/data/Toys4k --config.conditions.instances=... \\
        --config.rows.teacher.checkpoint_dir=CKPTS --config.rows.mdt_1x2.checkpoint_dir=STUDENT ...

Variants:
* ``toys4k``: the MDT-dist paper's Table 1 set-up: TRELLIS-image-large's teacher at 25 steps per stage
  (its released sampler settings) as the reference row, MDT-dist students at 1 and 2 steps per stage
  (guidance off: distilled); renders at 512 px from yaw 0/90/180/270, pitch 30, radius 2, fov 40;
  features of ``dinov2_vitl14`` (no registers) at 224 px. Checkpoint directories, the dataset root, its
  instances and the DINOv2 checkpoints are paths to fill in.
* ``tiny``: the tiny random-weight flows of ``tests/fixtures/trellis``, the tiny Gaussian decoder of
  ``tests/fixtures/eval_assets`` and the tiny DINOv2 of ``tests/fixtures/dinov2``; two conditions (the
  fixtures' random tokens) x 2 samples, three rows, 64 px renders. Its numbers mean nothing; it shows
  that everything runs, on the CPU in a few minutes.

Rows are keyed by name (``--config.rows.<name>.<field>=...``; they run and are reported in name order):
``checkpoint_dir`` holding ``ss_flow``,
``ss_decoder`` and ``slat_flow`` (TRELLIS stems or orbax directories), and ``ss``/``slat`` sampler settings
(``mdt_jax.generation.StageSampling``). ``reference``: ``row`` (a row's name) or ``dir`` (ground-truth
renders in the same protocol: ``DIR/protocol.json`` and ``DIR/<asset>/<view>.png``).
"""
from pathlib import Path

import ml_collections

# TRELLIS-image-large's pipeline.json sampler settings and structured-latent statistics.
from configs.sample import _TRELLIS_SLAT, _TRELLIS_SLAT_MEAN, _TRELLIS_SLAT_STD, _TRELLIS_SS

_REPO = Path(__file__).resolve().parents[1]
_FIXTURES = _REPO / "tests/fixtures"

_TRELLIS_NAMES = dict(ss_flow="ss_flow_img_dit_L_16l8_fp16", ss_decoder="ss_dec_conv3d_16l8_fp16",
                      slat_flow="slat_flow_img_dit_L_64l8p2_fp16")
_DISTILLED = dict(cfg_strength=0.0, cfg_interval=(0.0, 1.0), rescale_t=3.0)
_TINY_NAMES = dict(checkpoint_dir=str(_FIXTURES / "trellis"), ss_flow="ss_flow", ss_decoder="ss_dec",
                   slat_flow="slat_flow")


def _row(names, ss, slat):
  return dict(**names, ss=ss, slat=slat)


def _conditions(**values):
  conditions = dict(tokens=[], trellis_root="", instances=[], view=0, encoder_checkpoint="",
                    encoder_config="dinov2_vitl14_reg", image_size=518)
  conditions.update(values)
  return conditions


VARIANTS = {
    "toys4k": dict(
        conditions=_conditions(),
        samples_per_condition=1,
        rows={"teacher": _row(dict(checkpoint_dir="", **_TRELLIS_NAMES), _TRELLIS_SS, _TRELLIS_SLAT),
              "mdt_1x2": _row(dict(checkpoint_dir="", **_TRELLIS_NAMES), dict(steps=1, **_DISTILLED),
                              dict(steps=1, **_DISTILLED)),
              "mdt_2x2": _row(dict(checkpoint_dir="", **_TRELLIS_NAMES), dict(steps=2, **_DISTILLED),
                              dict(steps=2, **_DISTILLED))},
        decoder="", slat_mean=_TRELLIS_SLAT_MEAN, slat_std=_TRELLIS_SLAT_STD,
        protocol=dict(yaws_deg=(0.0, 90.0, 180.0, 270.0), pitch_deg=30.0, radius=2.0, fov_deg=40.0, resolution=512,
                      bg=(0.0, 0.0, 0.0)),
        features=dict(checkpoint="", config="dinov2_vitl14", image_size=224, batch_size=16),
        reference=dict(row="teacher", dir="")),
    "tiny": dict(
        conditions=_conditions(tokens=[str(_FIXTURES / "trellis/ss_flow.io.npz") + ":cond"]),
        samples_per_condition=2,
        rows={"teacher_4x2": _row(_TINY_NAMES, dict(steps=4, cfg_strength=3.0, cfg_interval=(0.5, 1.0),
                                                    rescale_t=3.0), dict(steps=2, **_DISTILLED)),
              "student_1x1": _row(_TINY_NAMES, dict(steps=1, **_DISTILLED), dict(steps=1, **_DISTILLED)),
              "student_2x1": _row(_TINY_NAMES, dict(steps=2, **_DISTILLED), dict(steps=1, **_DISTILLED))},
        decoder=str(_FIXTURES / "eval_assets/gs_dec_16"), slat_mean=(0.0,) * 8, slat_std=(1.0,) * 8,
        protocol=dict(yaws_deg=(0.0, 90.0, 180.0, 270.0), pitch_deg=30.0, radius=2.0, fov_deg=40.0, resolution=64,
                      bg=(0.0, 0.0, 0.0)),
        features=dict(checkpoint=str(_FIXTURES / "dinov2/model.safetensors"),
                      config=str(_FIXTURES / "dinov2/config.json"), image_size=70, batch_size=16),
        reference=dict(row="teacher_4x2", dir="")),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  variant = arg or "toys4k"
  if variant not in VARIANTS:
    raise ValueError(f"configs/evaluate_assets.py: unknown variant {variant!r}; known: {sorted(VARIANTS)}")
  config = ml_collections.ConfigDict(VARIANTS[variant])
  config.variant = variant
  config.seed = 0
  config.compute_dtype = "float32"
  return config
