"""The paper's asset evaluation protocol: how an asset is rendered, how its renders are stored, and how
DINOv2 features are taken from them.

Renders: each asset's Gaussians from ``len(yaws_deg)`` orbit cameras (TRELLIS's
``yaw_pitch_r_fov_to_extrinsics_intrinsics``, :func:`mdt_jax.render.orbit_cameras`; the paper: yaw
0/90/180/270 degrees, pitch 30, radius 2, field of view 40, 512 px) on the background ``bg``, by
:func:`mdt_jax.render.render_gaussians`.

A render set is a directory ``SET/protocol.json`` (:meth:`RenderProtocol.as_dict`) and
``SET/<asset>/<view>.png`` (8-bit RGB, ``<view>`` from :meth:`RenderProtocol.view_names`), plus, for the
sets this project writes, ``SET/<asset>/record.json`` (written last: the asset is complete). A directory
of ground-truth renders is a reference when it has this layout and the run's protocol.

Features (:class:`DinoFeatures`): the 8-bit render -> float in [0, 1] -> PIL bicubic resize to
``image_size`` square (no crop: renders are square) -> ImageNet mean/std -> DINOv2 -> the final norm's
class token (``x_norm_clstoken``, 1024 values for ViT-L/14), FD_dinov2's convention (dgm-eval: 224 px,
bicubic, the class token of ``dinov2_vitl14``).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mdt_jax.encoders import imagenet_normalize
from mdt_jax.render.assets import render_views, to_uint8

CAMERA_CODE = "TRELLIS render_utils.yaw_pitch_r_fov_to_extrinsics_intrinsics"
FEATURE_TOKEN = "x_norm_clstoken"


class ProtocolMismatch(ValueError):
  """A render set (a reference, or an output directory being resumed) does not fit the run."""


@dataclasses.dataclass(frozen=True)
class RenderProtocol:
  """How assets are rendered (defaults: the paper's). ``bg``: RGB in [0, 1]."""
  yaws_deg: tuple[float, ...] = (0.0, 90.0, 180.0, 270.0)
  pitch_deg: float = 30.0
  radius: float = 2.0
  fov_deg: float = 40.0
  resolution: int = 512
  bg: tuple[float, float, float] = (0.0, 0.0, 0.0)

  @classmethod
  def from_mapping(cls, values) -> "RenderProtocol":
    """A config section or a ``protocol.json`` -> protocol; ValueError naming unknown fields."""
    values = dict(values)
    values.pop("camera", None)
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"render protocol: unknown field(s) {unknown}")
    cast = {"yaws_deg": lambda v: tuple(float(x) for x in v), "bg": lambda v: tuple(float(x) for x in v),
            "resolution": int}
    return cls(**{k: cast.get(k, float)(v) for k, v in values.items()})

  def as_dict(self) -> dict[str, Any]:
    return {"camera": CAMERA_CODE, **{k: list(v) if isinstance(v, tuple) else v
                                     for k, v in dataclasses.asdict(self).items()}}

  def view_names(self) -> list[str]:
    """One file stem per camera: ``yaw000``, ``yaw090``, ... (yaw in whole degrees)."""
    return [f"yaw{round(y) % 360:03d}" for y in self.yaws_deg]

  def render(self, gaussians) -> np.ndarray:
    """Activated Gaussians (a Gaussian decoder's ``to_representation`` entry) -> uint8 [V, R, R, 3]."""
    views = {"yaws_deg": self.yaws_deg, "pitch_deg": self.pitch_deg, "radius": self.radius, "fov_deg": self.fov_deg}
    return to_uint8(render_views(gaussians, resolution=self.resolution, bg=self.bg, views=views))

  def background(self) -> np.ndarray:
    """The renders of an asset with no Gaussians: uint8 [V, R, R, 3] of ``bg``."""
    return np.broadcast_to(to_uint8(np.asarray(self.bg)), (len(self.yaws_deg), self.resolution, self.resolution, 3))


def _differences(found: dict, expected: dict) -> list[str]:
  return [f"{k}: {found.get(k, 'missing')} (run: {expected[k]})" for k in expected if found.get(k) != expected[k]]


def write_protocol(set_dir, protocol: RenderProtocol):
  """Creates ``set_dir`` with its ``protocol.json``, or checks the one there (ProtocolMismatch listing the
  fields that differ: a directory is never resumed under another protocol)."""
  path = Path(set_dir) / "protocol.json"
  if path.exists():
    problems = _differences(json.loads(path.read_text()), protocol.as_dict())
    if problems:
      raise ProtocolMismatch(f"{set_dir}: renders of another protocol ({'; '.join(problems)}); use another --out")
    return
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(protocol.as_dict(), indent=2))


def write_asset(set_dir, asset: str, images: np.ndarray, protocol: RenderProtocol, record: dict):
  """uint8 [V, R, R, 3] renders -> ``set_dir/asset/<view>.png``, then ``record.json`` (``record``)."""
  directory = Path(set_dir) / asset
  directory.mkdir(parents=True, exist_ok=True)
  for name, image in zip(protocol.view_names(), images):
    Image.fromarray(np.ascontiguousarray(image)).save(directory / f"{name}.png")
  (directory / "record.json").write_text(json.dumps(record, indent=2))


def cached_record(set_dir, asset: str, protocol: RenderProtocol) -> dict | None:
  """The record of an asset whose renders are all written, else None."""
  directory = Path(set_dir) / asset
  if not (directory / "record.json").is_file():
    return None
  if not all((directory / f"{name}.png").is_file() for name in protocol.view_names()):
    return None
  return json.loads((directory / "record.json").read_text())


def check_render_set(set_dir, protocol: RenderProtocol) -> list[str]:
  """A reference directory -> its asset names, sorted. Raises one ProtocolMismatch listing everything that
  differs from the run: a missing ``protocol.json``, each protocol field that differs, each asset's missing
  views, no assets at all; or FileNotFoundError if ``set_dir`` is not a directory."""
  set_dir = Path(set_dir)
  if not set_dir.is_dir():
    raise FileNotFoundError(f"reference {set_dir}: not a directory")
  problems = []
  path = set_dir / "protocol.json"
  if path.is_file():
    problems += _differences(json.loads(path.read_text()), protocol.as_dict())
  else:
    problems.append("no protocol.json")
  assets = sorted(p.name for p in set_dir.iterdir() if p.is_dir())
  for asset in assets:
    missing = [v for v in protocol.view_names() if not (set_dir / asset / f"{v}.png").is_file()]
    if missing:
      problems.append(f"{asset} lacks {missing}")
  if not assets:
    problems.append("no asset directories")
  if problems:
    raise ProtocolMismatch(f"reference {set_dir} does not match the run's protocol: {'; '.join(problems)}")
  return assets


def load_renders(set_dir, assets, protocol: RenderProtocol) -> np.ndarray:
  """uint8 [len(assets) V, R, R, 3]: every view of every asset, asset-major; an RGBA file is composited
  on the protocol's ``bg``. ValueError naming a file of another size."""
  images, bg = [], np.asarray(protocol.bg, np.float32)
  for asset in assets:
    for name in protocol.view_names():
      path = Path(set_dir) / asset / f"{name}.png"
      with Image.open(path) as image:
        rgba = np.asarray(image.convert("RGBA"), np.float32) / 255
      if rgba.shape[:2] != (protocol.resolution, protocol.resolution):
        raise ValueError(f"{path}: image of {rgba.shape[1]}x{rgba.shape[0]} px, the protocol renders "
                         f"{protocol.resolution}x{protocol.resolution}")
      images.append(to_uint8(rgba[..., :3] * rgba[..., 3:] + bg * (1 - rgba[..., 3:])))
  return np.stack(images)


class DinoFeatures:
  """DINOv2 features of renders (the module docstring's recipe), ``batch_size`` images per call.

  ``model, params``: a :class:`mdt_jax.models.dinov2.DinoV2` (``dinov2_vitl14`` for FD_dinov2); ``image_size``
  a multiple of its patch size.
  """

  def __init__(self, model, params, *, image_size: int = 224, batch_size: int = 16):
    if image_size % model.patch_size:
      raise ValueError(f"features.image_size {image_size} is not a multiple of the DINOv2 patch size "
                       f"{model.patch_size}")
    self.image_size, self.batch_size, self.params = int(image_size), int(batch_size), params
    self._forward = jax.jit(lambda p, x: model.apply({"params": p}, imagenet_normalize(x))[FEATURE_TOKEN])

  def describe(self) -> dict[str, Any]:
    return {"image_size": self.image_size, "resize": "PIL bicubic, whole square render (no crop)",
            "normalisation": "ImageNet mean/std", "token": FEATURE_TOKEN}

  def _resize(self, image: np.ndarray) -> np.ndarray:
    resized = Image.fromarray(image).resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
    return np.asarray(resized, np.float32) / 255

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> float64 [N, D]."""
    out = []
    for start in range(0, len(images), self.batch_size):
      batch = np.stack([self._resize(im) for im in images[start:start + self.batch_size]])
      pad = self.batch_size - len(batch)                                     # one compiled batch shape
      batch = np.concatenate([batch, np.zeros((pad,) + batch.shape[1:], np.float32)])
      out.append(np.asarray(self._forward(self.params, jnp.asarray(batch)), np.float64)[:self.batch_size - pad])
    return np.concatenate(out)
