"""A TRELLIS.2 sampling run (launch/sample.py with a ``trellis2_*`` config): conditions -> the
structure, shape and texture latents of each asset, written to a directory.

``sample_to_directory`` samples ``config.num_samples`` assets in batches of ``config.batch_size`` with
the checkpoints of a TRELLIS.2 sample config (configs/sample.py) and writes, for each asset i,
``sample_<i>.npz``: ``coords`` [n, 3] int32 (x, y, z) at ``resolution``, ``shape_latent`` [n, C_shape]
and ``tex_latent`` [n, C_tex] float32 (row j at ``coords[j]``), ``normalised`` (True: as the flows
sampled them; False: un-normalised with the config's statistics, what the upstream decoders take),
``ss_latent`` [R, R, R, C_ss] (the structure flow's sample); ``sample_<i>.ply`` (voxel centres) and
``sample_<i>.png`` (views of the voxels). Asset i uses condition i mod K.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from mdt_jax.generation import export
from mdt_jax.generation.pipeline import StageSampling
from mdt_jax.generation.sample_run import run_in_batches
from mdt_jax.generation.trellis2_pipeline import Trellis2Pipeline

CHECKPOINTS = ("ss_flow", "ss_decoder", "shape_flow", "tex_flow")


def image_cond(paths: list[str], dinov3_dir: str, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
  """RGBA images -> TRELLIS.2 condition tokens per image size, ``{S: [K, 1 + 4 + (S/16)^2, C]}``, from the
  frozen DINOv3 (a transformers-layout directory). Each image is cropped as TRELLIS's inference crop
  (docs/design.md, Image conditioning) straight to S x S, which is what the extractor's squash resize
  then leaves unchanged."""
  from conversion import dinov3
  from mdt_jax.data.image import preprocess_inference_image
  from mdt_jax.encoders import encode_images
  model, params = dinov3.load_checkpoint(dinov3_dir)
  encode = jax.jit(lambda p, x: encode_images(model, p, x))
  return {size: np.asarray(encode(params, np.stack([preprocess_inference_image(p, size=size) for p in paths])))
          for size in sorted(set(sizes))}


def _normalization(config, name: str):
  """(mean, std) from ``config.<name>_mean`` / ``_std``, or None when both are empty."""
  mean, std = tuple(config[f"{name}_mean"]), tuple(config[f"{name}_std"])
  return (mean, std) if mean or std else None


def sample_to_directory(config, cond: np.ndarray, out: Path, dtype, log=print, cond_slat: np.ndarray | None = None):
  """Samples ``config.num_samples`` assets for ``cond`` [K, L, C] (the structure's tokens) and
  ``cond_slat`` [K, L', C] (the latents' tokens; default ``cond``) with ``config``'s checkpoints
  (under ``config.checkpoint_dir``; an absolute name is used as it is) and sampler settings,
  computing in ``dtype`` (None: each checkpoint's own); writes them to ``out``."""
  out = Path(out)
  out.mkdir(parents=True, exist_ok=True)
  start = time.perf_counter()
  ckpt = Path(config.checkpoint_dir)
  pipe = Trellis2Pipeline.from_checkpoints(*(ckpt / config[name] for name in CHECKPOINTS),
                                           resolution=config.resolution, dtype=dtype,
                                           shape_normalization=_normalization(config, "shape"),
                                           tex_normalization=_normalization(config, "tex"))
  cond_slat = cond if cond_slat is None else cond_slat
  log(f"loaded {config.variant} checkpoints from {ckpt} in {time.perf_counter() - start:.1f} s; "
      f"{len(cond)} condition(s) {cond.shape[1:]} (latents: {cond_slat.shape[1:]}); voxels at {config.resolution}^3; "
      f"jax {jax.__version__} on {jax.devices()[0].platform}")
  settings = {name: StageSampling(**config[name]) for name in ("ss", "shape", "tex")}
  log("\n".join(f"{name}: {s}" for name, s in settings.items()))
  if pipe.shape_normalization is None:
    log("no latent statistics in the config: the latents are written normalised (normalised=True)")

  key = jax.random.key(config.seed)

  def write(result, b: int, i: int) -> int:
    coords, shape, texture = result.sample(b)
    export.save_npz(out / f"sample_{i:03d}.npz", coords=coords, shape_latent=shape, tex_latent=texture,
                    resolution=np.int32(pipe.resolution), normalised=np.bool_(result.normalised),
                    ss_latent=result.ss_latent[b])
    export.write_ply(out / f"sample_{i:03d}.ply", coords, pipe.resolution)
    if config.num_views:
      export.render_views(out / f"sample_{i:03d}.png", coords, pipe.resolution, views=export.VIEWS[:config.num_views],
                          title=f"sample {i}: {len(coords)} voxels at {pipe.resolution}^3")
    return len(coords)

  sample_batch = lambda ids: pipe(cond[ids % len(cond)], key, cond_slat=cond_slat[ids % len(cond_slat)],
                                  sample_ids=ids, **settings)
  run_in_batches(config.num_samples, config.batch_size, sample_batch, write, out, log, noun="asset")
