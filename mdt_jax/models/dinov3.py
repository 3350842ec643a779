"""DINOv3 ViT with register tokens (TRELLIS.2's image encoder, ``facebook/dinov3-vitl16-pretrain-lvd1689m``).

The maths is DINOv2's (:mod:`mdt_jax.models.dinov2`: its blocks, attention, MLP, LayerScale and patch
embedding, shared) but for (fixtures README section 4):

- no position embedding: a 2-D rotary embedding of the patch tokens in every attention, the
  half-split convention, on q and k of the patches only (cls and registers are not rotated);
- patch centres ``c = ((i + 0.5) / n) * 2 - 1`` for rows (y) and columns (x), frequencies
  ``1 / theta^(4 j / d)`` for j < d/4, angles ``2 pi [y inv, x inv]`` tiled twice to the head dim d;
- LayerNorm eps ``layer_norm_eps`` (1e-5); k has no bias (its slice of the fused ``qkv`` bias is 0:
  ``conversion/dinov3.py``);
- the patch embedding is a stride-16 conv with bias.

The param tree is DINOv2's layout (``blocks_{i}/attn/qkv`` fused q|k|v, ``ls1/gamma``, ``mlp/fc1``);
``conversion/dinov3.py`` maps the transformers layout onto it.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models.dinov2 import Block, PatchEmbed, weight_init, layer_norm

# Fields of the released ViT-L/16 (public model card; the tiny fixture checks the maths).
PRESETS: dict[str, dict[str, Any]] = {
    "dinov3_vitl16": dict(image_size=512, patch_size=16, num_channels=3, hidden_size=1024, num_hidden_layers=24,
                          num_attention_heads=16, intermediate_size=4096, num_register_tokens=4, rope_theta=100.0,
                          layer_norm_eps=1e-5, layerscale_value=1.0),
}


def patch_rope(grid_h: int, grid_w: int, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """(cos, sin), each [grid_h * grid_w, head_dim] float32, of the patches in row-major order."""
  inv = 1.0 / theta ** (jnp.arange(head_dim // 4, dtype=jnp.float32) * 4 / head_dim)
  ys = (jnp.arange(grid_h, dtype=jnp.float32) + 0.5) / grid_h * 2 - 1
  xs = (jnp.arange(grid_w, dtype=jnp.float32) + 0.5) / grid_w * 2 - 1
  y, x = jnp.meshgrid(ys, xs, indexing="ij")
  angles = 2 * math.pi * jnp.concatenate([y.reshape(-1, 1) * inv, x.reshape(-1, 1) * inv], axis=-1)
  angles = jnp.tile(angles, (1, 2))
  return jnp.cos(angles), jnp.sin(angles)


class DinoV3(nn.Module):
  """DINOv3 ViT; fields use the transformers ``DINOv3ViTConfig`` names.

  ``apply({"params": params}, images)`` with ``images`` [B, H, W, num_channels] float32,
  channels-last, ImageNet-normalised, H and W multiples of ``patch_size``, returns
  ``{"x_prenorm": [B, T, C]}``, T = 1 + R + (H/p)(W/p): the last layer's output, tokens
  ``[cls, registers, patches]`` (TRELLIS.2's condition is its non-affine LayerNorm:
  ``mdt_jax.encoders.condition_tokens``), and ``"x_norm"`` [B, T, C], the model's own final
  (affine) norm of it. Params are float32. ``mask_token`` is part of the checkpoint only.
  """
  image_size: int = 512
  patch_size: int = 16
  num_channels: int = 3
  hidden_size: int = 1024
  num_hidden_layers: int = 24
  num_attention_heads: int = 16
  intermediate_size: int = 4096
  num_register_tokens: int = 4
  rope_theta: float = 100.0
  layer_norm_eps: float = 1e-5
  layerscale_value: float = 1.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    p, dim, reg = self.patch_size, self.hidden_size, self.num_register_tokens
    if images.ndim != 4 or images.shape[-1] != self.num_channels or images.shape[1] % p or images.shape[2] % p:
      raise ValueError(f"DinoV3 expects images [B, H, W, {self.num_channels}] (channels-last) with H and W "
                       f"multiples of {p}, got shape {images.shape}")
    b, h, w, _ = images.shape
    cls_token = self.param("cls_token", weight_init, (1, 1, dim), jnp.float32)
    register_tokens = self.param("register_tokens", weight_init, (1, reg, dim), jnp.float32)
    self.param("mask_token", nn.initializers.zeros, (1, 1, dim), jnp.float32)
    patches = PatchEmbed(p, dim, self.dtype, name="patch_embed")(images)
    x = jnp.concatenate([jnp.broadcast_to(cls_token.astype(self.dtype), (b, 1, dim)),
                         jnp.broadcast_to(register_tokens.astype(self.dtype), (b, reg, dim)), patches], axis=1)
    rope = patch_rope(h // p, w // p, dim // self.num_attention_heads, self.rope_theta)
    for i in range(self.num_hidden_layers):
      x = Block(self.num_attention_heads, self.intermediate_size, init_values=self.layerscale_value,
                dtype=self.dtype, norm_eps=self.layer_norm_eps, name=f"blocks_{i}")(x, rope)
    return {"x_prenorm": x, "x_norm": layer_norm(self.dtype, "norm", self.layer_norm_eps)(x)}
