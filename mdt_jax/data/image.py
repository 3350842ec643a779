"""TRELLIS's condition-image preprocessing (numpy/PIL, host side): RGBA view -> [518, 518, 3] float32.

Both crops run through PIL in TRELLIS's order, so results are bit-identical to it: PIL resizes
RGBA as premultiplied alpha internally, rounds a float crop box half-to-even and fills outside the
image with transparent black. The output is RGB in [0, 1] premultiplied by alpha (black
background); ImageNet normalisation happens later, inside ``mdt_jax.encoders.encode_images``.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

IMAGE_SIZE = 518
CROP_SCALE = 1.2
INFERENCE_ALPHA_THRESHOLD = 0.8 * 255

ImageLike = str | os.PathLike | Image.Image | np.ndarray


def _as_rgba(path_or_rgba: ImageLike) -> Image.Image:
  """An RGBA PIL image from a path, a PIL image or a uint8 [H, W, 4] array; other modes are refused."""
  if isinstance(path_or_rgba, np.ndarray):
    if path_or_rgba.dtype != np.uint8 or path_or_rgba.ndim != 3 or path_or_rgba.shape[-1] != 4:
      raise ValueError(f"expected an RGBA uint8 array [H, W, 4], got {path_or_rgba.dtype} "
                       f"{path_or_rgba.shape}")
    return Image.fromarray(path_or_rgba, "RGBA")
  if isinstance(path_or_rgba, Image.Image):
    image, source = path_or_rgba, "image"
  else:
    with Image.open(path_or_rgba) as opened:
      opened.load()
    image, source = opened, os.fspath(path_or_rgba)
  if image.mode != "RGBA":
    raise ValueError(f"{source}: expected an RGBA image (object on a transparent background), got mode "
                     f"{image.mode!r}; remove the background first (e.g. with rembg) and save as RGBA")
  return image


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
  """(x_min, y_min, x_max, y_max) pixel indices of the True entries of an [H, W] mask."""
  rows, cols = np.nonzero(mask)
  return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def _crop_resize(image: Image.Image, box: tuple[float, ...], size: int, caller: str) -> np.ndarray:
  """PIL crop (float box rounded half-to-even, outside -> transparent black) + Lanczos resize.

  Returns the uint8 [size, size, 4] RGBA result.
  """
  image = image.crop(box)
  if image.width == 0 or image.height == 0:
    raise ValueError(f"{caller}: the object is too small to crop (crop box {box})")
  return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))


def _premultiplied(rgba: np.ndarray) -> np.ndarray:
  """uint8 [H, W, 4] -> float32 [H, W, 3]: RGB / 255 times alpha / 255, in float32."""
  rgba = rgba.astype(np.float32) / 255
  return rgba[:, :, :3] * rgba[:, :, 3:4]


def preprocess_training_view(path_or_rgba: ImageLike, *, size: int = IMAGE_SIZE) -> np.ndarray:
  """TRELLIS's training-time crop of one rendered view.

  Bounding box of alpha > 0 (width = max - min pixel index), float centre, half size
  1.2 * max(width, height) / 2, box = int() (toward zero) of centre -/+ half size; crop (outside
  -> transparent black), Lanczos resize to ``size``, RGB/255 times alpha/255 in float32.

  Args:
    path_or_rgba: RGBA PNG path, RGBA PIL image or uint8 [H, W, 4] array.
  Returns:
    float32 [size, size, 3] in [0, 1], premultiplied.
  """
  image = _as_rgba(path_or_rgba)
  alpha = np.asarray(image.getchannel("A"))
  if not np.any(alpha > 0):
    raise ValueError("preprocess_training_view: the alpha channel is empty (no object to crop)")
  x0, y0, x1, y1 = _bbox(alpha > 0)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  half = max(x1 - x0, y1 - y0) / 2 * CROP_SCALE
  box = (int(cx - half), int(cy - half), int(cx + half), int(cy + half))
  return _premultiplied(_crop_resize(image, box, size, "preprocess_training_view"))


def preprocess_inference_image(path_or_rgba: ImageLike, *, size: int = IMAGE_SIZE) -> np.ndarray:
  """TRELLIS's inference-time crop of a user image whose background is already transparent.

  Bounding box of alpha > 0.8 * 255; side = int(1.2 * max(w, h)); box = centre -/+ side // 2
  (floats, rounded half-to-even by PIL); crop, Lanczos resize to ``size``, premultiply in float32,
  re-quantise to uint8 by truncation, then / 255.

  Args:
    path_or_rgba: RGBA PNG path, RGBA PIL image or uint8 [H, W, 4] array.
  Returns:
    float32 [size, size, 3] in [0, 1], premultiplied, on the uint8 grid.
  Raises:
    ValueError when the image has no useful alpha channel (not RGBA, fully opaque, or nothing
    above the threshold): TRELLIS would remove the background with a separate model, which we
    do not ship.
  """
  image = _as_rgba(path_or_rgba)
  alpha = np.asarray(image.getchannel("A"))
  if np.all(alpha == 255):
    raise ValueError("preprocess_inference_image: the image is fully opaque; remove the background "
                     "first (e.g. with rembg) and save as RGBA")
  if not np.any(alpha > INFERENCE_ALPHA_THRESHOLD):
    raise ValueError("preprocess_inference_image: no pixel has alpha > 0.8 * 255 (no object to crop)")
  x0, y0, x1, y1 = _bbox(alpha > INFERENCE_ALPHA_THRESHOLD)
  cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
  side = int(max(x1 - x0, y1 - y0) * CROP_SCALE)
  box = (cx - side // 2, cy - side // 2, cx + side // 2, cy + side // 2)
  rgba = _crop_resize(image, box, size, "preprocess_inference_image")
  quantised = (_premultiplied(rgba) * 255).astype(np.uint8)
  return quantised.astype(np.float32) / 255
