"""DINOv2 encoder parity with upstream goldens (every stored intermediate), and encode_images.

Tolerance: the fixtures README's suggestion, atol 5e-5 on every float32 array and against the
float64 runs (observed fp32 vs fp64 upstream: <= 6.5e-6).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import dinov2_fixtures
from conversion.dinov2 import load_checkpoint
from mdt_jax.encoders import condition_tokens, encode_images, imagenet_normalize
from mdt_jax.models.dinov2 import DinoV2, interpolate_pos_embed

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

ATOL = 5e-5
BF16_MEAN_ATOL = 0.05  # bfloat16 compute: observed mean |error| ~0.01, max ~0.07 on set A

SETS, SCAN_PROBLEMS = dinov2_fixtures.scan()
CASES = [pytest.param(s, name, path, id=f"{s.root.name}-{name}") for s in SETS for name, path in s.cases]


def test_fixture_scan():
  assert not SCAN_PROBLEMS, "\n".join(SCAN_PROBLEMS)
  assert CASES, f"no DINOv2 cases found under {dinov2_fixtures.scan_root()}"


@functools.cache
def _encoder(fixture_set):
  """(model, params, forward with intermediates, jitted encode_images) for one set, compiled once."""
  weights = fixture_set.safetensors or fixture_set.pth
  if weights.suffix == ".pth":
    pytest.importorskip("torch")
  model, params = load_checkpoint(weights, fixture_set.config)
  forward = jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=["intermediates"]))
  encode = jax.jit(functools.partial(encode_images, model))
  return model, params, forward, encode


def _nhwc(x):
  return np.transpose(x, (0, 2, 3, 1))


def _check(name, got, want, atol=ATOL):
  got = np.asarray(got, np.float64)
  assert got.shape == want.shape, f"{name}: shape {got.shape}, reference {want.shape}"
  err = float(np.max(np.abs(got - want)))
  assert err <= atol, f"{name}: max |error| {err:.3g} > {atol:g}"
  return err


@pytest.mark.parametrize("fixture_set,name,path", CASES)
def test_parity(fixture_set, name, path):
  ref = dict(np.load(path))
  model, params, forward, encode = _encoder(fixture_set)
  images = _nhwc(ref["image"])
  assert tuple(ref["grid_hw"]) == (images.shape[1] // model.patch_size, images.shape[2] // model.patch_size)
  out, state = forward(params, images)
  inter = state["intermediates"]
  got = dict(out,
             patch_embed=inter["patch_embed_out"][0],
             pos_embed_used=inter["pos_embed_used"][0],
             tokens_in=inter["tokens_in"][0],
             block_out=jnp.stack(inter["block_out"]),
             trellis_cond=condition_tokens(out["x_prenorm"]))
  assert {"x_prenorm", "trellis_cond"} <= set(ref), f"{path}: no x_prenorm / trellis_cond"
  errors = {key: _check(key, value, ref[key]) for key, value in got.items() if key in ref}
  for key in ("x_prenorm", "trellis_cond"):
    if f"{key}_fp64" in ref:
      errors[f"{key}_fp64"] = _check(f"{key} vs fp64", got[key], ref[f"{key}_fp64"])
  # The pipeline entry point: raw [0, 1] images, normalisation inside, jitted.
  _check("imagenet_normalize", imagenet_normalize(_nhwc(ref["image_raw"])), _nhwc(ref["image"]), atol=1e-6)
  errors["encode_images"] = _check("encode_images", encode(params, _nhwc(ref["image_raw"])), ref["trellis_cond"])
  print(f"{path}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


@pytest.mark.parametrize("fixture_set", [pytest.param(s, id=s.root.name) for s in SETS])
def test_encode_images_bfloat16(fixture_set):
  model, params, _, _ = _encoder(fixture_set)
  ref = np.load(fixture_set.cases[0][1])
  encode = jax.jit(functools.partial(encode_images, model, dtype=jnp.bfloat16))
  cond = encode(params, _nhwc(ref["image_raw"]))
  assert cond.dtype == jnp.float32 and cond.shape == ref["trellis_cond"].shape
  err = np.abs(np.asarray(cond) - ref["trellis_cond"])
  assert np.all(np.isfinite(err)) and err.mean() < BF16_MEAN_ATOL, f"mean {err.mean():.3g}, max {err.max():.3g}"


def _keys_cubic(x, a=-0.5):
  x = np.abs(x)
  near = ((a + 2) * x - (a + 3)) * x * x + 1
  far = (((x - 5) * x + 8) * x - 4) * a
  return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


def _resize_matrix(n_in, n_out):
  """The README's rule as an [n_out, n_in] matrix: half-pixel centres, Keys a=-0.5 stretched by
  in/out when shrinking, out-of-grid taps dropped, rows renormalised to sum 1."""
  scale = n_in / n_out
  src = (np.arange(n_out) + 0.5) * scale - 0.5
  w = _keys_cubic((np.arange(n_in)[None, :] - src[:, None]) / max(scale, 1.0))
  return w / w.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("m,grid", [(5, (7, 6)), (5, (3, 7)), (5, (4, 4)), (5, (2, 9)), (5, (8, 5)),
                                    (5, (37, 37)), (37, (16, 16)), (37, (74, 20)), (4, (4, 4))])
def test_interpolate_pos_embed_matches_documented_rule(m, grid):
  dim = 3
  pos = np.random.default_rng(m * 100 + grid[0]).normal(size=(1, 1 + m * m, dim)).astype(np.float32)
  got = np.asarray(interpolate_pos_embed(jnp.asarray(pos), grid))
  table = np.einsum("ih,hwd,jw->ijd", _resize_matrix(m, grid[0]), pos[0, 1:].reshape(m, m, dim).astype(np.float64),
                    _resize_matrix(m, grid[1]))
  want = np.concatenate([pos[:, :1], table.reshape(1, -1, dim)], axis=1)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  assert got[0, 0].tolist() == pos[0, 0].tolist()


def test_rejects_bad_image_shapes():
  model = DinoV2(img_size=28, embed_dim=8, depth=1, num_heads=2, num_register_tokens=1)
  with pytest.raises(ValueError, match="multiples of the patch size 14"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 30, 3)))
  with pytest.raises(ValueError, match="channels-last"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 3, 28, 28)))


@pytest.mark.parametrize("fixture_set", [pytest.param(s, id=s.root.name) for s in SETS[:1]])
def test_encode_images_is_frozen(fixture_set):
  model, params, _, _ = _encoder(fixture_set)
  images = jnp.full((1, model.img_size, model.img_size, 3), 0.5)
  grads = jax.jit(jax.grad(lambda p: jnp.sum(encode_images(model, p, images) ** 2)))(params)
  assert all(not np.any(g) for g in jax.tree.leaves(grads))
