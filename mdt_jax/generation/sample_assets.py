"""The 3D assets of a sampling run: a Gaussian decoder (and optionally a mesh decoder) checked against the
SLat flow before anything is sampled, then per sample structured latent -> activated Gaussians (and a
mesh) -> files through :func:`mdt_jax.render.assets.write_sample_assets`.

Render settings (``config.assets`` of configs/sample.py): ``resolution`` of the PNG views and the
turntable, ``turntable_frames``; 0 picks :data:`AUTO` by platform (small on the CPU, where one 512 x 512
view of a 640,000-Gaussian asset takes seconds).
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from conversion.trellis import load_model
from mdt_jax.models.slat_decoders import SLatGaussianDecoder, SLatMeshDecoder
from mdt_jax.render.assets import asset_paths, write_sample_assets
from mdt_jax.sparse import SparseTensor

# (resolution, turntable frames) when the config leaves them 0: TRELLIS's 512 px and 120 frames (4 s at
# 30 fps) on an accelerator; 256 px and 30 frames on the CPU.
AUTO = {"cpu": (256, 30), "accelerator": (512, 120)}


def render_settings(assets, platform: str) -> tuple[int, int]:
  """``config.assets`` (``resolution``, ``turntable_frames``; 0: :data:`AUTO`) -> (resolution, frames)."""
  resolution, frames = AUTO["cpu" if platform == "cpu" else "accelerator"]
  return int(assets.resolution or resolution), int(assets.turntable_frames or frames)


class AssetDecoders:
  """A Gaussian decoder and an optional mesh decoder, each ``(model, params)``, that fit ``slat_flow``.

  ``decode(coords, feats)``: one sample's voxels [n, 3] (x, y, z) and un-normalised latents [n, C] ->
  (Gaussians: a dict of ``to_representation``, mesh dict or None).
  """

  def __init__(self, gaussian, mesh=None, *, slat_flow, names=("gaussian_decoder", "mesh_decoder")):
    pairs = [pair for pair in zip((gaussian, mesh), names, (SLatGaussianDecoder, SLatMeshDecoder)) if pair[0]]
    problems = []
    for (model, _), name, kind in pairs:
      if not isinstance(model, kind):
        problems.append(f"{name} is a {type(model).__name__}, not a {kind.__name__}")
        continue
      if model.latent_channels != slat_flow.out_channels:
        problems.append(f"{name} latent_channels {model.latent_channels} != SLat flow out_channels "
                        f"{slat_flow.out_channels}")
      if model.resolution != slat_flow.resolution:
        problems.append(f"{name} resolution {model.resolution} != SLat flow resolution {slat_flow.resolution}")
    if problems:
      raise ValueError("decoders do not fit the SLat flow: " + "; ".join(problems))
    self.decoders = [(m, p, jax.jit(lambda p, x, m=m: m.apply({"params": p}, x))) for (m, p), _, _ in pairs]

  @classmethod
  def from_config(cls, config, slat_flow, dtype=None) -> "AssetDecoders | None":
    """``config.gaussian_decoder`` / ``config.mesh_decoder`` (paths under ``config.checkpoint_dir``, or
    absolute; "" for none) -> the decoders, or None when no Gaussian decoder is configured. ValueError
    when a mesh decoder comes without a Gaussian one, or a decoder does not fit ``slat_flow``."""
    if not config.gaussian_decoder:
      if config.mesh_decoder:
        raise ValueError("config.mesh_decoder needs config.gaussian_decoder (the views and turntable are "
                         "rendered from the Gaussians)")
      return None
    ckpt = Path(config.checkpoint_dir)
    gaussian = load_model(ckpt / config.gaussian_decoder, dtype=dtype)
    mesh = load_model(ckpt / config.mesh_decoder, dtype=dtype) if config.mesh_decoder else None
    return cls(gaussian, mesh, slat_flow=slat_flow,
               names=(f"config.gaussian_decoder {config.gaussian_decoder!r}",
                      f"config.mesh_decoder {config.mesh_decoder!r}"))

  @property
  def with_mesh(self) -> bool:
    return len(self.decoders) == 2

  def decode(self, coords: np.ndarray, feats: np.ndarray):
    x = SparseTensor.from_packed(np.concatenate([np.zeros((len(coords), 1), np.int32), coords], 1).astype(np.int32),
                                 np.asarray(feats, np.float32))
    reps = [model.apply({"params": params}, fn(params, x), method="to_representation")[0]
            for model, params, fn in self.decoders]
    return reps[0], (reps[1] if self.with_mesh else None)

  def existing_files(self, out: Path, indices) -> list[str]:
    """The asset files of samples ``indices`` that already exist under ``out``."""
    return [str(p) for i in indices for p in asset_paths(out, int(i), with_mesh=self.with_mesh).values() if p.exists()]

  def write(self, out: Path, index: int, coords, feats, *, resolution: int, turntable_frames: int,
            overwrite: bool) -> dict[str, Path]:
    """Decodes sample ``index`` and writes its files (raises NonFiniteAsset, writing nothing, when the
    Gaussians or the mesh hold NaN or inf)."""
    gaussians, mesh = self.decode(coords, feats)
    return write_sample_assets(out, index, gaussians, mesh, resolution=resolution, turntable_frames=turntable_frames,
                               overwrite=overwrite)
