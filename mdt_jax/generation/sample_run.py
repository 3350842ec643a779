"""A sampling run (launch/sample.py): conditions from files or images -> shapes written to a directory.

``sample_to_directory`` samples ``config.num_samples`` shapes in batches of ``config.batch_size`` with
the checkpoints of a sample config (configs/sample.py) and writes, for each shape i,
``sample_<i>.npz`` (coords [n, 3] int32 (x, y, z), un-normalised feats [n, C], resolution),
``sample_<i>.ply`` (voxel centres as a point cloud) and ``sample_<i>.png`` (views of the voxels);
shape i uses condition i mod K. Progress and the time of each stage go to ``log``.

With ``config.gaussian_decoder`` set (:mod:`mdt_jax.generation.sample_assets`) it also writes the 3D
assets of each shape (``sample_<i>_gaussians.ply``, ``sample_<i>_mesh.glb`` with ``config.mesh_decoder``,
``sample_<i>_turntable.mp4``, and ``sample_<i>.png`` rendered from the Gaussians in place of the voxel
views; ``<i>`` unpadded, :func:`mdt_jax.render.assets.asset_paths`). A decoder that does not fit the SLat
flow, or asset files that exist (unless ``overwrite``), are refused before anything is sampled; a shape
whose Gaussians or mesh are not finite is named and skipped, and the run ends with
:class:`SkippedSamples`.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from mdt_jax.errors import RunError
from mdt_jax.generation import export
from mdt_jax.generation.pipeline import StageSampling, TwoStagePipeline
from mdt_jax.generation.sample_assets import AssetDecoders, render_settings
from mdt_jax.render.assets import NonFiniteAsset


class SkippedSamples(RunError):
  """Shapes whose assets were not written (non-finite Gaussians or mesh); the message names them."""


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


def image_cond(paths: list[str], dinov2_checkpoint: str, dinov2_config: str | None = None) -> np.ndarray:
  """RGBA images -> TRELLIS condition tokens [K, 1 + R + N, C] from the frozen DINOv2 (TRELLIS's
  inference crop; docs/design.md, Image conditioning)."""
  from conversion import dinov2
  from mdt_jax.data.image import preprocess_inference_image
  from mdt_jax.encoders import encode_images
  model, params = dinov2.load_checkpoint(dinov2_checkpoint, dinov2_config)
  images = np.stack([preprocess_inference_image(p) for p in paths])
  return np.asarray(jax.jit(lambda p, x: encode_images(model, p, x))(params, images))


def sample_to_directory(config, cond: np.ndarray, out: Path, dtype, log=print, overwrite: bool = False) -> None:
  """Samples ``config.num_samples`` shapes for ``cond`` [K, L, C] with ``config``'s checkpoints (under
  ``config.checkpoint_dir``) and sampler settings, computing in ``dtype``; writes them to ``out``
  (asset files already there are replaced only with ``overwrite``)."""
  out = Path(out)
  start = time.perf_counter()
  ckpt = Path(config.checkpoint_dir)
  pipe = TwoStagePipeline.from_checkpoints(ckpt / config.ss_flow, ckpt / config.ss_decoder, ckpt / config.slat_flow,
                                           slat_mean=config.slat_mean, slat_std=config.slat_std,
                                           dtype=dtype)
  decoders = AssetDecoders.from_config(config, pipe.slat_flow, dtype)
  n = config.num_samples
  if decoders and not overwrite and (existing := decoders.existing_files(out, range(n))):
    raise FileExistsError(f"{out} already holds assets {existing[:4]}{' ...' if len(existing) > 4 else ''}; "
                          "refusing to overwrite them (--overwrite replaces them)")
  if decoders:
    resolution, frames = render_settings(config.assets, jax.devices()[0].platform)
    log(f"assets: Gaussians from {config.gaussian_decoder}"
        + (f", mesh from {config.mesh_decoder}" if decoders.with_mesh else "")
        + f"; views and a {frames}-frame turntable at {resolution}x{resolution}")
  out.mkdir(parents=True, exist_ok=True)
  log(f"loaded {config.variant} checkpoints from {ckpt} in {time.perf_counter() - start:.1f} s; "
      f"{len(cond)} condition(s) {cond.shape[1:]}; {config.compute_dtype} compute; jax {jax.__version__} on "
      f"{jax.devices()[0].platform}")
  ss, slat = StageSampling(**config.ss), StageSampling(**config.slat)
  log(f"stage 1: {ss}\nstage 2: {slat}")

  key = jax.random.key(config.seed)
  skipped = []

  def write(result, b: int, i: int) -> int:
    coords, feats = result.sample(b)
    export.save_latents(out / f"sample_{i:03d}.npz", coords, feats, pipe.resolution)
    export.write_ply(out / f"sample_{i:03d}.ply", coords, pipe.resolution)
    if decoders and len(coords):
      asset_start = time.perf_counter()
      try:
        decoders.write(out, i, coords, feats, resolution=resolution, turntable_frames=frames, overwrite=overwrite)
      except NonFiniteAsset as e:
        log(str(e))
        skipped.append(i)
      result.timings["assets"] = result.timings.get("assets", 0.0) + time.perf_counter() - asset_start
    elif config.num_views:
      export.render_views(out / f"sample_{i:03d}.png", coords, pipe.resolution, views=export.VIEWS[:config.num_views],
                          title=f"sample {i}: {len(coords)} voxels at {pipe.resolution}^3")
    return len(coords)

  run_in_batches(n, config.batch_size, lambda ids: pipe(cond[ids % len(cond)], key, ss=ss, slat=slat, sample_ids=ids),
                 write, out, log, noun="shape")
  if skipped:
    raise SkippedSamples(f"samples {skipped} have non-finite Gaussians or mesh: their assets were not written")


def run_in_batches(num_samples: int, batch_size: int, sample_batch, write_sample, out: Path, log, noun: str) -> None:
  """Samples ``num_samples`` ids in batches of ``batch_size`` and writes each, logging progress.

  ``sample_batch(ids)`` -> a result with ``timings`` (dict stage -> seconds) for ids [batch_size]; the
  last batch is padded to the batch size (one compiled shape; the extra ids are dropped).
  ``write_sample(result, b, i)`` writes batch row ``b`` as sample ``i`` and returns its voxel count.
  """
  totals: dict[str, float] = {}
  batches = -(-num_samples // batch_size)
  run_start = time.perf_counter()
  for k in range(batches):
    ids = np.arange(k * batch_size, (k + 1) * batch_size)
    result = sample_batch(ids)
    counts = [write_sample(result, b, int(i)) for b, i in enumerate(ids[ids < num_samples])]
    for name, seconds in result.timings.items():
      totals[name] = totals.get(name, 0.0) + seconds
    elapsed = time.perf_counter() - run_start
    per_stage = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in result.timings.items())
    log(f"[batch {k + 1}/{batches}] {noun}s {ids[0]}-{min(ids[-1], num_samples - 1)}: voxels {counts}; {per_stage}; "
        f"elapsed {elapsed:.1f} s, eta {elapsed / (k + 1) * (batches - k - 1):.1f} s")
  log("time per stage over the run (first batch includes compilation): "
      + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in totals.items()))
  log(f"wrote {num_samples} {noun}(s) to {out}")
