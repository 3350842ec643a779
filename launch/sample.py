"""Samples shapes with the two TRELLIS flows and writes what came out.

    python launch/sample.py --config=configs/sample.py:tiny --out=/tmp/mdt_samples
    python launch/sample.py --config=configs/sample.py:trellis_image_L --config.checkpoint_dir=CKPTS \\
        --cond=tokens.npy --config.num_samples=8 --config.ss.steps=12 --out=/tmp/samples

``--image=a.png[,b.png] --dinov2=CKPT``: image-to-3D (TRELLIS's inference crop and DINOv2 tokens);
with a ``trellis2_*`` config, ``--image=... --dinov3=DIR`` (DINOv3 tokens at the config's image sizes)
runs TRELLIS.2's structure, shape and texture stages (mdt_jax/generation/trellis2_run.py).
``--cond``: condition tokens, ``.npy`` [L, C] or [K, L, C] (e.g. DINOv2 tokens), or ``FILE.npz:KEY``;
shape i uses condition i mod K. Default for the tiny variant: the tiny fixtures' random tokens.
For each shape i it writes ``sample_<i>.npz``, ``sample_<i>.ply`` and ``sample_<i>.png``
(mdt_jax/generation/sample_run.py); with decoders configured (both variants) also
``sample_<i>_gaussians.ply``, ``sample_<i>_mesh.glb`` and ``sample_<i>_turntable.mp4``, the PNG then
rendered from the Gaussians. It prints per-batch progress and the time of each stage.

``--pipeline=DIR``: a released TRELLIS pipeline folder (``pipeline.json`` + ``ckpts/``) gives the
checkpoints, decoders, sampler settings and latent normalisation; ``--config.*`` fields given on the
command line still win.
"""
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from configs import sample as sample_configs
from mdt_jax import cli, numerics
from mdt_jax.generation import sample_run, trellis2_run
from mdt_jax.generation.pipeline_folder import apply_pipeline_folder

_REPO = Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(_REPO / "configs/sample.py") + ":tiny", "Sampling config.")
_COND = flags.DEFINE_string("cond", None, "Condition tokens: .npy [L, C] / [K, L, C], or FILE.npz:KEY.")
_IMAGE = flags.DEFINE_list("image", None, "RGBA image(s) to condition on (image-to-3D): TRELLIS's inference crop, "
                           "then DINOv2 tokens; replaces --cond.")
_DINOV2 = flags.DEFINE_string("dinov2", None, "DINOv2 checkpoint (.safetensors, or .pth with the torch extra) for --image.")
_DINOV2_CONFIG = flags.DEFINE_string("dinov2_config", None, "DINOv2 preset name or constructor json "
                                     "(default: dinov2_vitl14_reg).")
_DINOV3 = flags.DEFINE_string("dinov3", None, "DINOv3 directory (transformers layout) for --image with a trellis2 "
                              "config.")
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_DTYPE = flags.DEFINE_enum("dtype", None, list(numerics.COMPUTE_DTYPES),
                           "Compute dtype of the flow trunks (overrides config.compute_dtype; parameters stay "
                           "float32). bfloat16 on GPU/TPU; float16 is TRELLIS's use_fp16 arithmetic.")
_PIPELINE = flags.DEFINE_string("pipeline", None, "A TRELLIS pipeline folder (pipeline.json + ckpts/) to sample "
                                "with (e.g. TRELLIS-image-large as downloaded).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace asset files that already exist in --out.")
_TINY_COND = {"tiny": str(_REPO / "tests/fixtures/trellis/ss_flow.io.npz") + ":cond",
              "trellis2_tiny": str(_REPO / "tests/fixtures/trellis2/ss_flow.io.npz") + ":cond"}


def main(argv):
  del argv
  config = _CONFIG.value
  if _PIPELINE.value:
    apply_pipeline_folder(config, sample_configs.get_config(config.variant), _PIPELINE.value)
  if not config.checkpoint_dir:
    raise app.UsageError("set --config.checkpoint_dir to the directory holding the checkpoints")
  if _DTYPE.value:
    config.compute_dtype = _DTYPE.value
  try:
    dtype = numerics.compute_dtype(config.compute_dtype, field="config.compute_dtype")
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  log = lambda line: print(line, flush=True)
  if config.pipeline == "trellis2":
    _sample_trellis2(config, dtype, log)
    return
  if _IMAGE.value:
    if not _DINOV2.value:
      raise app.UsageError("--image needs --dinov2=<DINOv2 checkpoint>")
    cond = sample_run.image_cond(_IMAGE.value, _DINOV2.value, _DINOV2_CONFIG.value)
  else:
    cond = sample_run.load_cond(_cond_spec(config))
  sample_run.sample_to_directory(config, cond, Path(_OUT.value), dtype, log=log, overwrite=_OVERWRITE.value)


def _cond_spec(config) -> str:
  spec = _COND.value or _TINY_COND.get(config.variant)
  if spec is None:
    raise app.UsageError("--cond or --image is required for this variant")
  return spec


def _sample_trellis2(config, dtype, log):
  """TRELLIS.2: DINOv3 tokens of --image at the config's sizes, or --cond for every stage."""
  if _IMAGE.value:
    if not _DINOV3.value:
      raise app.UsageError("--image with a trellis2 config needs --dinov3=<DINOv3 directory>")
    tokens = trellis2_run.image_cond(_IMAGE.value, _DINOV3.value, (config.cond_size, config.slat_cond_size))
    cond, cond_slat = tokens[config.cond_size], tokens[config.slat_cond_size]
  else:
    cond = cond_slat = sample_run.load_cond(_cond_spec(config))
  trellis2_run.sample_to_directory(config, cond, Path(_OUT.value), dtype, log=log, cond_slat=cond_slat)


if __name__ == "__main__":
  cli.run(main)
