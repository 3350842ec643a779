"""DINOv2 ViT image encoder (the ``dinov2_vitl14_reg`` construction) as a pure-functional Flax module.

Numerics follow ``tests/fixtures/dinov2/README.md`` (the upstream behaviour, measured):

- patch embedding: a conv with kernel = stride = patch size and a bias, flattened row-major
  (patch ``r * gw + c`` covers pixel rows ``14r..14r+13``, columns ``14c..14c+13``);
- tokens ``[cls, reg_0 .. reg_{R-1}, patch_0 .. patch_{N-1}]``: the (interpolated) position
  embedding is added to cls and the patches; register tokens get none;
- pre-norm blocks ``x += ls1 * attn(norm1(x)); x += ls2 * mlp(norm2(x))``, fused qkv (rows
  ``[q | k | v]``, head h at rows ``h*hd:(h+1)*hd`` of each), exact-erf GELU, LayerNorm eps 1e-6
  with a two-pass variance; a final norm.

The param tree mirrors the upstream state dict through ``conversion/common.py``'s generic map
(``blocks.0.attn.qkv.weight`` <-> ``params["blocks_0"]["attn"]["qkv"]["kernel"]``), so
``conversion/dinov2.py`` needs no key table.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mdt_jax.models.attention import attention

NORM_EPS = 1e-6

# Constructor fields (this module's names) of the released checkpoints we support.
PRESETS: dict[str, dict[str, Any]] = {
    "dinov2_vitl14_reg": dict(img_size=518, patch_size=14, in_chans=3, embed_dim=1024, depth=24,
                              num_heads=16, mlp_ratio=4.0, num_register_tokens=4, qkv_bias=True,
                              proj_bias=True, ffn_bias=True, init_values=1.0),
    # No register tokens: the encoder FD_dinov2 is conventionally computed with (its final-norm cls token).
    "dinov2_vitl14": dict(img_size=518, patch_size=14, in_chans=3, embed_dim=1024, depth=24, num_heads=16,
                          mlp_ratio=4.0, num_register_tokens=0, qkv_bias=True, proj_bias=True, ffn_bias=True,
                          init_values=1.0),
}

weight_init = nn.initializers.normal(0.02)


def interpolate_pos_embed(pos_embed: jax.Array, grid_hw: tuple[int, int]) -> jax.Array:
  """Resizes a stored position embedding to a patch grid, as upstream does.

  Args:
    pos_embed: [1, 1 + M*M, D]; entry 0 belongs to cls, entries 1.. form an MxM grid (row-major).
    grid_hw: (gh, gw), the input's patch grid; rows follow the image height.
  Returns:
    [1, 1 + gh*gw, D] float32. The grid is resized separably with the antialiased Keys cubic
    (a = -0.5), half-pixel centres, out-of-grid taps dropped and the weights renormalised (the
    kernel is stretched by in/out when shrinking); the cls entry is never resized. When the grid
    already is MxM the stored values are returned unchanged.
  """
  pos_embed = pos_embed.astype(jnp.float32)
  num_grid = pos_embed.shape[1] - 1
  m = int(round(num_grid ** 0.5))
  if m * m != num_grid:
    raise ValueError(f"pos_embed holds {num_grid} grid entries, not a square number")
  gh, gw = grid_hw
  if (gh, gw) == (m, m):
    return pos_embed
  dim = pos_embed.shape[-1]
  grid = pos_embed[0, 1:].reshape(m, m, dim)
  grid = jax.image.resize(grid, (gh, gw, dim), method="bicubic", antialias=True)
  return jnp.concatenate([pos_embed[:, :1], grid.reshape(1, gh * gw, dim)], axis=1)


class LayerScale(nn.Module):
  """Per-channel scale ``x * gamma``; ``gamma`` [D] float32, initialised to ``init_value``."""
  init_value: float
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    gamma = self.param("gamma", nn.initializers.constant(self.init_value), (x.shape[-1],), jnp.float32)
    return x * gamma.astype(self.dtype)


def rotate_last_tokens(x: jax.Array, rope) -> jax.Array:
  """DINOv3's rotary embedding of the last N tokens (the patches; cls and registers untouched),
  half-split convention: ``x cos + rotate_half(x) sin`` with ``rotate_half(x) = [-x2, x1]``.
  x [B, L, H, hd]; rope (cos, sin), each [N, hd] float32. Computed in float32."""
  cos, sin = rope
  n, half = cos.shape[0], x.shape[-1] // 2
  tail = x[:, -n:].astype(jnp.float32)
  rotated = jnp.concatenate([-tail[..., half:], tail[..., :half]], axis=-1)
  tail = tail * cos[None, :, None, :] + rotated * sin[None, :, None, :]
  return jnp.concatenate([x[:, :-n], tail.astype(x.dtype)], axis=1)


class Attention(nn.Module):
  """Multi-head self-attention over all tokens, no mask: [B, L, D] -> [B, L, D]; ``rope``
  (DINOv3): (cos, sin) [N, hd] rotating q and k of the last N tokens (:func:`rotate_last_tokens`)."""
  num_heads: int
  qkv_bias: bool = True
  proj_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, rope=None) -> jax.Array:
    b, length, dim = x.shape
    if dim % self.num_heads:
      raise ValueError(f"embed_dim {dim} is not divisible by num_heads {self.num_heads}")
    qkv = nn.Dense(3 * dim, use_bias=self.qkv_bias, dtype=self.dtype, kernel_init=weight_init, name="qkv")(x)
    qkv = qkv.reshape(b, length, 3, self.num_heads, dim // self.num_heads)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    if rope is not None:
      q, k = rotate_last_tokens(q, rope), rotate_last_tokens(k, rope)
    out = attention(q, k, v)  # [B, L, H, hd]
    return nn.Dense(dim, use_bias=self.proj_bias, dtype=self.dtype, kernel_init=weight_init,
                    name="proj")(out.reshape(b, length, dim))


class Mlp(nn.Module):
  """``fc2(gelu_erf(fc1(x)))``: [B, L, D] -> [B, L, D] through ``hidden`` channels."""
  hidden: int
  use_bias: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    dim = x.shape[-1]
    h = nn.Dense(self.hidden, use_bias=self.use_bias, dtype=self.dtype, kernel_init=weight_init, name="fc1")(x)
    h = jax.nn.gelu(h, approximate=False)
    return nn.Dense(dim, use_bias=self.use_bias, dtype=self.dtype, kernel_init=weight_init, name="fc2")(h)


def layer_norm(dtype, name: str, eps: float = NORM_EPS) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


class Block(nn.Module):
  """Pre-norm transformer block with LayerScale: [B, L, D] -> [B, L, D] (``rope``: DINOv3's, see
  :class:`Attention`)."""
  num_heads: int
  mlp_hidden: int
  qkv_bias: bool = True
  proj_bias: bool = True
  ffn_bias: bool = True
  init_values: float | None = 1.0
  dtype: Any = jnp.float32
  norm_eps: float = NORM_EPS

  @nn.compact
  def __call__(self, x: jax.Array, rope=None) -> jax.Array:
    h = Attention(self.num_heads, self.qkv_bias, self.proj_bias, self.dtype,
                  name="attn")(layer_norm(self.dtype, "norm1", self.norm_eps)(x), rope)
    if self.init_values:
      h = LayerScale(self.init_values, self.dtype, name="ls1")(h)
    x = x + h
    h = Mlp(self.mlp_hidden, self.ffn_bias, self.dtype, name="mlp")(layer_norm(self.dtype, "norm2", self.norm_eps)(x))
    if self.init_values:
      h = LayerScale(self.init_values, self.dtype, name="ls2")(h)
    return x + h


class PatchEmbed(nn.Module):
  """[B, H, W, C] -> [B, (H/p)*(W/p), D], patches flattened row-major."""
  patch_size: int
  embed_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = self.patch_size
    x = nn.Conv(self.embed_dim, (p, p), strides=(p, p), padding="VALID", dtype=self.dtype,
                kernel_init=weight_init, name="proj")(images)
    b, gh, gw, d = x.shape
    return x.reshape(b, gh * gw, d)


class DinoV2(nn.Module):
  """DINOv2 ViT with register tokens; fields use upstream's constructor names.

  ``apply({"params": params}, images)`` with ``images`` [B, H, W, in_chans] float32,
  channels-last, already ImageNet-normalised, H and W multiples of ``patch_size`` returns a dict
  (T = 1 + R + N tokens, N = (H/p)(W/p), R = ``num_register_tokens``, C = ``embed_dim``, all in
  ``dtype``):
    ``x_prenorm`` [B, T, C]: the last block's output;
    ``x_norm_clstoken`` [B, C], ``x_norm_regtokens`` [B, R, C], ``x_norm_patchtokens`` [B, N, C]:
    the final norm's output split by token kind.
  Params are float32 whatever ``dtype`` (the compute dtype) is. With ``mutable=["intermediates"]``
  the module also sows ``patch_embed_out`` [B, N, C], ``pos_embed_used`` [1, 1 + N, C] float32,
  ``tokens_in`` [B, T, C] and ``block_out`` (a tuple of ``depth`` [B, T, C] block outputs); each
  entry is a tuple, as ``sow`` stores them.
  """
  img_size: int = 518
  patch_size: int = 14
  in_chans: int = 3
  embed_dim: int = 1024
  depth: int = 24
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_register_tokens: int = 4
  qkv_bias: bool = True
  proj_bias: bool = True
  ffn_bias: bool = True
  init_values: float | None = 1.0  # LayerScale's initial value; None: no LayerScale
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    p, dim, reg = self.patch_size, self.embed_dim, self.num_register_tokens
    if images.ndim != 4 or images.shape[-1] != self.in_chans:
      raise ValueError(f"DinoV2 expects images [B, H, W, {self.in_chans}] (channels-last), "
                       f"got shape {images.shape}")
    b, h, w, _ = images.shape
    if h % p or w % p:
      raise ValueError(f"DinoV2: image height and width must be multiples of the patch size {p}, "
                       f"got {h}x{w}")
    grid = self.img_size // p
    cls_token = self.param("cls_token", weight_init, (1, 1, dim), jnp.float32)
    pos_embed = self.param("pos_embed", weight_init, (1, 1 + grid * grid, dim), jnp.float32)
    # Part of the checkpoint (masked-image pretraining); inference does not use it.
    self.param("mask_token", nn.initializers.zeros, (1, dim), jnp.float32)

    patches = PatchEmbed(p, dim, self.dtype, name="patch_embed")(images)
    self.sow("intermediates", "patch_embed_out", patches)
    pos = interpolate_pos_embed(pos_embed, (h // p, w // p))
    self.sow("intermediates", "pos_embed_used", pos)
    cls = jnp.broadcast_to(cls_token.astype(self.dtype), (b, 1, dim))
    x = jnp.concatenate([cls, patches], axis=1) + pos.astype(self.dtype)
    if reg:
      register_tokens = self.param("register_tokens", weight_init, (1, reg, dim), jnp.float32)
      regs = jnp.broadcast_to(register_tokens.astype(self.dtype), (b, reg, dim))
      x = jnp.concatenate([x[:, :1], regs, x[:, 1:]], axis=1)
    self.sow("intermediates", "tokens_in", x)

    mlp_hidden = int(dim * self.mlp_ratio)
    for i in range(self.depth):
      x = Block(self.num_heads, mlp_hidden, self.qkv_bias, self.proj_bias, self.ffn_bias,
                self.init_values, self.dtype, name=f"blocks_{i}")(x)
      self.sow("intermediates", "block_out", x)

    x_norm = layer_norm(self.dtype, "norm")(x)
    return {
        "x_prenorm": x,
        "x_norm_clstoken": x_norm[:, 0],
        "x_norm_regtokens": x_norm[:, 1:1 + reg],
        "x_norm_patchtokens": x_norm[:, 1 + reg:],
    }
