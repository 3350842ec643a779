"""TRELLIS's two condition-image crops against a direct numpy computation of box and premultiply.

The reference computes the crop box with numpy, crops by zero-padding (transparent black outside
the image), resizes with PIL's Lanczos (the resampler TRELLIS uses) and premultiplies in float32;
results must be bit-identical.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mdt_jax.data.image import preprocess_inference_image, preprocess_training_view

SIZE = 518


def _synthetic_rgba(height, width, centre, radii, seed):
  """Random RGB; a soft-edged ellipse of alpha (0 outside, 255 inside, a ramp in between)."""
  rng = np.random.default_rng(seed)
  rgb = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
  rows, cols = np.mgrid[0:height, 0:width]
  r = np.sqrt(((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2)
  alpha = np.clip((1.15 - r) / 0.3, 0, 1) * 255
  return np.concatenate([rgb, alpha.astype(np.uint8)[..., None]], axis=-1)


# (height, width, ellipse centre (row, col), radii (row, col)): centred, touching each border,
# larger than the image, non-square, odd extents (half-pixel centres).
IMAGES = {
    "centred": (64, 64, (32, 32), (12, 9)),
    "touch_top_left": (60, 72, (3, 2), (20, 14)),
    "touch_bottom_right": (61, 47, (58, 44), (9, 17)),
    "overflowing": (40, 50, (20, 25), (30, 40)),
    "thin_odd": (33, 91, (16, 45), (3, 30)),
}


def _crop_zero_padded(rgba, box):
  """rgba[y0:y1, x0:x1] for an integer box that may leave the image; outside is (0, 0, 0, 0)."""
  x0, y0, x1, y1 = box
  out = np.zeros((y1 - y0, x1 - x0, 4), np.uint8)
  h, w = rgba.shape[:2]
  sy0, sy1, sx0, sx1 = max(y0, 0), min(y1, h), max(x0, 0), min(x1, w)
  out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgba[sy0:sy1, sx0:sx1]
  return out


def _lanczos(rgba):
  return np.asarray(Image.fromarray(rgba, "RGBA").resize((SIZE, SIZE), Image.Resampling.LANCZOS))


def _reference_training(rgba):
  ys, xs = np.nonzero(rgba[..., 3] > 0)
  centre = np.array([xs.min() + xs.max(), ys.min() + ys.max()]) / 2
  half = 1.2 * max(xs.max() - xs.min(), ys.max() - ys.min()) / 2
  box = np.trunc(np.concatenate([centre - half, centre + half])).astype(int)
  out = _lanczos(_crop_zero_padded(rgba, box)).astype(np.float32) / np.float32(255)
  return out[..., :3] * out[..., 3:], box


def _reference_inference(rgba):
  ys, xs = np.nonzero(rgba[..., 3] > 204)
  centre = np.array([xs.min() + xs.max(), ys.min() + ys.max()]) / 2
  side = np.floor(1.2 * max(xs.max() - xs.min(), ys.max() - ys.min())).astype(int)
  box = np.rint(np.concatenate([centre - side // 2, centre + side // 2])).astype(int)  # half-to-even
  out = _lanczos(_crop_zero_padded(rgba, box)).astype(np.float32) / np.float32(255)
  out = (out[..., :3] * out[..., 3:] * np.float32(255)).astype(np.uint8)
  return out.astype(np.float32) / np.float32(255), box


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("crop", ["training", "inference"])
def test_crop_matches_numpy(name, crop):
  rgba = _synthetic_rgba(*IMAGES[name], seed=len(name))
  fn, reference = {"training": (preprocess_training_view, _reference_training),
                   "inference": (preprocess_inference_image, _reference_inference)}[crop]
  got = fn(rgba)
  want, box = reference(rgba)
  assert got.dtype == np.float32 and got.shape == (SIZE, SIZE, 3)
  assert 0 <= got.min() and got.max() <= 1
  np.testing.assert_array_equal(got, want)
  if name != "centred":  # these crops reach outside the image: the transparent-black fill is exercised
    h, w = rgba.shape[:2]
    assert box[0] < 0 or box[1] < 0 or box[2] > w or box[3] > h, box


def test_path_and_pil_inputs_match_array(tmp_path):
  rgba = _synthetic_rgba(*IMAGES["touch_top_left"], seed=1)
  path = tmp_path / "view.png"
  Image.fromarray(rgba, "RGBA").save(path)
  for fn in (preprocess_training_view, preprocess_inference_image):
    want = fn(rgba)
    np.testing.assert_array_equal(fn(path), want)
    np.testing.assert_array_equal(fn(str(path)), want)
    np.testing.assert_array_equal(fn(Image.open(path)), want)


def test_size_option():
  assert preprocess_training_view(_synthetic_rgba(*IMAGES["centred"], seed=0), size=70).shape == (70, 70, 3)


def test_images_without_useful_alpha_are_refused(tmp_path):
  rgba = _synthetic_rgba(*IMAGES["centred"], seed=0)
  rgb_path = tmp_path / "rgb.png"
  Image.fromarray(rgba[..., :3], "RGB").save(rgb_path)
  for fn in (preprocess_training_view, preprocess_inference_image):
    with pytest.raises(ValueError, match="expected an RGBA image"):
      fn(rgb_path)
    with pytest.raises(ValueError, match="RGBA uint8 array"):
      fn(rgba[..., :3])
  opaque = rgba.copy()
  opaque[..., 3] = 255
  with pytest.raises(ValueError, match="fully opaque"):
    preprocess_inference_image(opaque)
  faint = rgba.copy()
  faint[..., 3] = np.minimum(faint[..., 3], 204)
  with pytest.raises(ValueError, match=r"alpha > 0.8 \* 255"):
    preprocess_inference_image(faint)
  empty = rgba.copy()
  empty[..., 3] = 0
  with pytest.raises(ValueError, match="alpha channel is empty"):
    preprocess_training_view(empty)
  dot = np.zeros_like(rgba)
  dot[10, 10] = 255
  with pytest.raises(ValueError, match="too small to crop"):
    preprocess_training_view(dot)
