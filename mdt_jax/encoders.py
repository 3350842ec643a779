"""Image -> condition tokens with a frozen encoder, traceable inside a jitted step: TRELLIS's DINOv2
and TRELLIS.2's DINOv3 (both conditions are the non-affine LayerNorm of the last layer's tokens)."""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mdt_jax.models.dinov2 import DinoV2
from mdt_jax.models.dinov3 import DinoV3

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CONDITION_EPS = 1e-5


def imagenet_normalize(images: jax.Array) -> jax.Array:
  """[B, H, W, 3] RGB in [0, 1] -> ``(images - mean) / std`` per channel, float32."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32)
  std = jnp.asarray(IMAGENET_STD, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def condition_tokens(x_prenorm: jax.Array) -> jax.Array:
  """TRELLIS's condition: layer norm over channels with no affine and eps 1e-5.

  [B, T, C] (any float dtype) -> [B, T, C] float32; statistics in float32, biased variance.
  """
  x = x_prenorm.astype(jnp.float32)
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + CONDITION_EPS)


def squash_resize(images: Sequence[Image.Image | np.ndarray], size: int) -> np.ndarray:
  """TRELLIS.2's image preprocessing (``DinoV3FeatureExtractor``) before normalisation: each image
  (a PIL image or a uint8 array [H, W, 3 or 4]) resized to ``size`` x ``size`` with PIL's LANCZOS,
  squashed (aspect not kept; Pillow resizes RGBA in premultiplied alpha), alpha dropped after the
  resize. -> [B, size, size, 3] float32 in [0, 1]."""
  out = []
  for image in images:
    image = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    out.append(np.asarray(image.resize((size, size), Image.LANCZOS).convert("RGB"), np.float32) / 255.0)
  return np.stack(out)


def encode_images(model: DinoV2 | DinoV3, params: Any, images: jax.Array, *, dtype: Any = None) -> jax.Array:
  """TRELLIS (DINOv2) or TRELLIS.2 (DINOv3) condition tokens of a batch of images.

  Args:
    model: a :class:`DinoV2` (e.g. from ``conversion.dinov2.load_checkpoint``) or a :class:`DinoV3`
      (``conversion.dinov3.load_checkpoint``; images from :func:`squash_resize`, 512 x 512 or
      1024 x 1024 for TRELLIS.2, or any float images in [0, 1], which are only normalised).
    params: its float32 params (a traced argument under ``jax.jit``).
    images: [B, H, W, 3] float RGB in [0, 1], premultiplied by alpha, as
      ``mdt_jax.data.image`` produces (518 x 518 for TRELLIS); H, W multiples of the patch size.
      ImageNet mean/std normalisation happens here.
    dtype: compute dtype of the encoder (e.g. ``jnp.bfloat16``); None keeps ``model.dtype``.
  Returns:
    [B, 1 + R + N, C] float32: the non-affine layer norm (eps 1e-5) of ``x_prenorm``;
    [B, 1374, 1024] for ``dinov2_vitl14_reg`` at 518 x 518, [B, 1029, 1024] for DINOv3 ViT-L/16 at
    512 x 512 (all tokens: cls, 4 registers, the patches). The encoder is frozen: no gradient
    flows back through the result (to params or images).

  Pure and jit-able: call it inside ``jax.jit`` with ``model`` and ``dtype`` closed over (static).
  """
  if dtype is not None:
    model = model.clone(dtype=dtype)
  out = model.apply({"params": params}, imagenet_normalize(images))
  return jax.lax.stop_gradient(condition_tokens(out["x_prenorm"]))
