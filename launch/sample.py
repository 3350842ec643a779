"""Samples shapes with the two TRELLIS flows and writes what came out.

    python launch/sample.py --config=configs/sample.py:tiny --out=/tmp/mdt_samples
    python launch/sample.py --config=configs/sample.py:trellis_image_L --config.checkpoint_dir=CKPTS \\
        --cond=tokens.npy --config.num_samples=8 --config.ss.steps=12 --out=/tmp/samples

``--image=a.png[,b.png] --dinov2=CKPT``: image-to-3D (TRELLIS's inference crop and DINOv2 tokens).
``--cond``: condition tokens, ``.npy`` [L, C] or [K, L, C] (e.g. DINOv2 tokens), or ``FILE.npz:KEY``;
shape i uses condition i mod K. Default for the tiny variant: the tiny fixtures' random tokens.
For each shape i it writes ``sample_<i>.npz`` (coords [n, 3] int32 (x, y, z), un-normalised feats
[n, C], resolution), ``sample_<i>.ply`` (voxel centres as a point cloud) and ``sample_<i>.png``
(views of the voxels); it prints per-batch progress and the time of each stage.
"""
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from mdt_jax import cli, numerics
from mdt_jax.generation import StageSampling, TwoStagePipeline, export

_REPO = Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(_REPO / "configs/sample.py") + ":tiny", "Sampling config.")
_COND = flags.DEFINE_string("cond", None, "Condition tokens: .npy [L, C] / [K, L, C], or FILE.npz:KEY.")
_IMAGE = flags.DEFINE_list("image", None, "RGBA image(s) to condition on (image-to-3D): TRELLIS's inference crop, "
                           "then DINOv2 tokens; replaces --cond.")
_DINOV2 = flags.DEFINE_string("dinov2", None, "DINOv2 checkpoint (.safetensors, or .pth with the torch extra) for --image.")
_DINOV2_CONFIG = flags.DEFINE_string("dinov2_config", None, "DINOv2 preset name or constructor json "
                                     "(default: dinov2_vitl14_reg).")
_OUT = flags.DEFINE_string("out", None, "Output directory.", required=True)
_DTYPE = flags.DEFINE_enum("dtype", None, list(numerics.COMPUTE_DTYPES),
                           "Compute dtype of the flow trunks (overrides config.compute_dtype; parameters stay "
                           "float32). bfloat16 on GPU/TPU; float16 is TRELLIS's use_fp16 arithmetic.")
_TINY_COND = str(_REPO / "tests/fixtures/trellis/ss_flow.io.npz") + ":cond"


def load_cond(spec: str) -> np.ndarray:
  """``.npy`` or ``FILE.npz:KEY`` -> [K, L, C] float32."""
  path, key = spec.rsplit(":", 1) if ".npz:" in spec else (spec, "")
  if not Path(path).is_file():
    raise FileNotFoundError(f"--cond: no such file {path}")
  if path.endswith(".npz") and not key:
    raise ValueError(f"--cond: name the array inside the .npz: {path}:KEY")
  cond = np.load(path)[key] if key else np.load(path)
  cond = np.asarray(cond, np.float32)
  if cond.ndim == 2:
    cond = cond[None]
  if cond.ndim != 3:
    raise ValueError(f"--cond: expected [L, C] or [K, L, C] tokens, got shape {cond.shape}")
  return cond


def image_cond(paths: list[str]) -> np.ndarray:
  """RGBA images -> TRELLIS condition tokens [K, 1 + R + N, C] from the frozen DINOv2."""
  if not _DINOV2.value:
    raise app.UsageError("--image needs --dinov2=<DINOv2 checkpoint>")
  from conversion import dinov2
  from mdt_jax.data.image import preprocess_inference_image
  from mdt_jax.encoders import encode_images
  model, params = dinov2.load_checkpoint(_DINOV2.value, _DINOV2_CONFIG.value)
  images = np.stack([preprocess_inference_image(p) for p in paths])
  return np.asarray(jax.jit(lambda p, x: encode_images(model, p, x))(params, images))


def main(argv):
  del argv
  config = _CONFIG.value
  if not config.checkpoint_dir:
    raise app.UsageError("set --config.checkpoint_dir to the directory holding the checkpoints")
  if _DTYPE.value:
    config.compute_dtype = _DTYPE.value
  try:
    dtype = numerics.compute_dtype(config.compute_dtype, field="config.compute_dtype")
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  if _IMAGE.value:
    cond = image_cond(_IMAGE.value)
  else:
    cond_spec = _COND.value or (_TINY_COND if config.variant == "tiny" else None)
    if cond_spec is None:
      raise app.UsageError("--cond or --image is required for this variant")
    cond = load_cond(cond_spec)
  out = Path(_OUT.value)
  out.mkdir(parents=True, exist_ok=True)

  start = time.perf_counter()
  ckpt = Path(config.checkpoint_dir)
  pipe = TwoStagePipeline.from_checkpoints(ckpt / config.ss_flow, ckpt / config.ss_decoder, ckpt / config.slat_flow,
                                           slat_mean=config.slat_mean, slat_std=config.slat_std,
                                           dtype=dtype)
  print(f"loaded {config.variant} checkpoints from {ckpt} in {time.perf_counter() - start:.1f} s; "
        f"{len(cond)} condition(s) {cond.shape[1:]}; {config.compute_dtype} compute; jax {jax.__version__} on "
        f"{jax.devices()[0].platform}")
  ss, slat = StageSampling(**config.ss), StageSampling(**config.slat)
  print(f"stage 1: {ss}\nstage 2: {slat}")

  n, bs = config.num_samples, config.batch_size
  key = jax.random.key(config.seed)
  totals: dict[str, float] = {}
  batches = -(-n // bs)
  run_start = time.perf_counter()
  for k in range(batches):
    # The last batch is padded to the batch size (extra shapes are dropped): one compiled shape.
    ids = np.arange(k * bs, (k + 1) * bs)
    result = pipe(cond[ids % len(cond)], key, ss=ss, slat=slat, sample_ids=ids)
    for name, seconds in result.timings.items():
      totals[name] = totals.get(name, 0.0) + seconds
    counts = []
    for b, i in enumerate(ids[ids < n]):
      coords, feats = result.sample(b)
      counts.append(len(coords))
      export.save_latents(out / f"sample_{i:03d}.npz", coords, feats, pipe.resolution)
      export.write_ply(out / f"sample_{i:03d}.ply", coords, pipe.resolution)
      if config.num_views:
        export.render_views(out / f"sample_{i:03d}.png", coords, pipe.resolution, views=export.VIEWS[:config.num_views],
                            title=f"sample {i}: {len(coords)} voxels at {pipe.resolution}^3")
    elapsed = time.perf_counter() - run_start
    stages = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.timings.items())
    print(f"[batch {k + 1}/{batches}] shapes {ids[0]}-{min(ids[-1], n - 1)}: voxels {counts}; {stages}; "
          f"elapsed {elapsed:.1f} s, eta {elapsed / (k + 1) * (batches - k - 1):.1f} s", flush=True)
  print("time per stage over the run (first batch includes compilation): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in totals.items()))
  print(f"wrote {n} shape(s) to {out}")


if __name__ == "__main__":
  cli.run(main)
