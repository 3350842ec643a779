"""The one attention function: the blocked (flash-style) path against the plain formula, forward and
gradients, dense and segment-masked, odd lengths, cross attention; the automatic choice."""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close

attn = importlib.import_module("mdt_jax.models.attention")  # the module (the package exports the function)
pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)


def _reference(q, k, v, q_seg=None, k_seg=None):
  """softmax(q k^T / sqrt(d)) v per head, written out; [B, L, H, D]. A row with no key of its
  segment sees every key (finite; such rows are excluded from the comparisons)."""
  s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
  if q_seg is not None:
    mask = q_seg[:, None, :, None] == k_seg[:, None, None, :]
    s = jnp.where(mask | ~jnp.any(mask, -1, keepdims=True), s, -jnp.inf)
  return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)


def _inputs(seed, b, lq, lk, h, d):
  rng = np.random.default_rng(seed)
  q, k, v = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((b, lq, h, d), (b, lk, h, d), (b, lk, h, d)))
  return rng, q, k, v


def _check(q, k, v, q_seg=None, k_seg=None, *, block_q=None, block_k=None, valid=None, attend=None):
  """``attend(q, k, v)`` (default: blocked with these block sizes) == reference on the valid query rows,
  forward and d/d(q, k, v) of a weighted sum."""
  valid = np.ones(q.shape[:2], bool) if valid is None else valid
  weight = jnp.asarray(np.random.default_rng(1).standard_normal(q.shape), jnp.float32) * valid[:, :, None, None]
  blocked = attend or (lambda q, k, v: attn.blocked_attention(q, k, v, q_seg, k_seg, block_q=block_q, block_k=block_k))
  ref = lambda q, k, v: _reference(q, k, v, q_seg, k_seg)

  def value_and_grads(f):          # one compiled program: the output and d/d(q, k, v) of sum(out * weight)
    def loss(*a):
      out = f(*a)
      return jnp.sum(out * weight), out
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)

  (_, out), grads = value_and_grads(blocked)
  (_, expected_out), expected = value_and_grads(ref)   # rows not valid have weight 0
  assert out.shape == q.shape and bool(jnp.all(jnp.isfinite(out)))
  assert_close(np.asarray(out)[valid], np.asarray(expected_out)[valid], atol=1e-5, rtol=1e-5, what="forward")
  for name, g, e in zip("qkv", grads, expected):
    assert bool(jnp.all(jnp.isfinite(g))), f"d{name} not finite"
    assert_close(g, e, atol=2e-5, rtol=1e-4, what=f"d{name}")


@pytest.mark.parametrize("lq,block_q,block_k", [(37, 8, 16), (29, 7, 5)])
def test_blocked_dense_self_attention(lq, block_q, block_k):
  _, q, k, v = _inputs(0, 2, lq, lq, 3, 8)
  _check(q, k, v, block_q=block_q, block_k=block_k)


@pytest.mark.parametrize("lq,lk", [(33, 7), (5, 41)])
def test_blocked_cross_attention(lq, lk):
  _, q, k, v = _inputs(2, 2, lq, lk, 2, 4)
  _check(q, k, v, block_q=16, block_k=8)


def test_blocked_segments_with_padding_rows():
  """Sparse layout: contiguous samples, padding rows (-1) between and at the end; a padding row has no
  same-segment key: finite output, no NaN gradient. Small blocks, so cross-sample pairs are skipped."""
  rng, q, k, v = _inputs(3, 2, 45, 45, 2, 8)
  seg = np.concatenate([np.zeros(12), np.full(3, -1), np.ones(17), np.full(5, 2), np.full(8, -1)]).astype(np.int32)
  seg = jnp.asarray(np.stack([seg, np.roll(seg, 4)]))
  _check(q, k, v, seg, seg, block_q=8, block_k=8, valid=np.asarray(seg) >= 0)


def test_blocked_cross_attention_segments():
  """Tokens of 3 samples against 3 condition sequences of 7 tokens each (the SLat model's cross
  attention), odd lengths."""
  rng, q, k, v = _inputs(4, 1, 41, 21, 2, 8)
  q_seg = jnp.asarray(np.r_[np.zeros(10), np.ones(15), np.full(13, 2), np.full(3, -1)].astype(np.int32))[None]
  k_seg = jnp.repeat(jnp.arange(3, dtype=jnp.int32), 7)[None]
  _check(q, k, v, q_seg, k_seg, block_q=8, block_k=4, valid=np.asarray(q_seg) >= 0)


# Packed segments, odd lengths: 12 rows of sample 0, padding, 17 of sample 1, one row of sample 2,
# sample 3 absent (no rows), 4 rows of sample 4, padding at the end.
_PACKED = np.concatenate([np.zeros(12), np.full(3, -1), np.ones(17), [2], np.full(4, 4), np.full(8, -1)]).astype(np.int32)


def test_varlen_segments_match_the_formula_with_padding_single_row_and_absent_samples():
  """Regrouped into [5, capacity] with lengths (the GPU path; XLA's kernel here), forward and grads,
  two batch rows with different layouts; padding rows NaN-free and 0."""
  _, q, k, v = _inputs(8, 2, len(_PACKED), len(_PACKED), 2, 8)
  seg = jnp.asarray(np.stack([_PACKED, np.roll(_PACKED, 5)]))
  for packing in (attn.Packing(5), attn.Packing(5, q_capacity=17, kv_capacity=17)):
    f = lambda q, k, v: attn.varlen_attention(q, k, v, seg, seg, packing, kernel="xla")
    _check(q, k, v, seg, seg, valid=np.asarray(seg) >= 0, attend=f)
    assert bool(jnp.all(f(q, k, v)[np.asarray(seg) < 0] == 0))


def test_varlen_cross_attention_to_each_samples_condition():
  """Packed tokens of 3 samples against their 7 condition tokens each, flattened (the SLat model's
  cross attention): kv regrouped exactly, [3, 7]."""
  _, q, k, v = _inputs(9, 1, 41, 21, 2, 8)
  q_seg = jnp.asarray(np.r_[np.zeros(10), np.ones(15), np.full(13, 2), np.full(3, -1)].astype(np.int32))[None]
  k_seg = jnp.repeat(jnp.arange(3, dtype=jnp.int32), 7)[None]
  f = lambda q, k, v: attn.attention(q, k, v, q_segment_ids=q_seg, kv_segment_ids=k_seg,
                                     packing=attn.Packing(3, kv_capacity=7), implementation="varlen")
  _check(q, k, v, q_seg, k_seg, valid=np.asarray(q_seg) >= 0, attend=f)


def test_varlen_capacity_overflow_is_nan_for_that_segment_only():
  _, q, k, v = _inputs(10, 1, len(_PACKED), len(_PACKED), 2, 4)
  seg = jnp.asarray(_PACKED)[None]
  out = attn.varlen_attention(q, k, v, seg, seg, attn.Packing(5, q_capacity=12, kv_capacity=17), kernel="xla")
  nan_rows = np.asarray(jnp.any(jnp.isnan(out[0]), axis=(-2, -1)))
  np.testing.assert_array_equal(nan_rows, _PACKED == 1)      # sample 1 has 17 rows > 12


def test_blocked_under_vmap():
  """vmapped (as the per-device sparse objective is): the skip becomes a select; same values."""
  rng, q, k, v = _inputs(5, 1, 30, 30, 2, 4)
  seg = jnp.asarray(np.r_[np.zeros(9), np.ones(19), np.full(2, -1)].astype(np.int32))[None]
  stack = lambda x: jnp.stack([x, x * 0.5])
  f = lambda q, k, v, s: attn.blocked_attention(q, k, v, s, s, block_q=8, block_k=8)
  out = jax.vmap(f)(stack(q), stack(k), stack(v), jnp.stack([seg, seg]))
  valid = np.asarray(seg[0]) >= 0
  for i, scale in enumerate((1.0, 0.5)):
    expected = _reference(q * scale, k * scale, v * scale, seg, seg)
    assert_close(np.asarray(out[i, 0])[valid], np.asarray(expected[0])[valid], what=f"vmapped {i}")


def test_public_function_implementations_agree():
  """attention(..., implementation=...) on CPU: xla and blocked agree; fp16 in -> fp16 out; the
  automatic choice is the plain path for short sequences, the blocked one past the crossover."""
  _, q, k, v = _inputs(6, 1, 40, 40, 2, 8)
  seg = jnp.asarray(np.r_[np.zeros(25), np.ones(15)].astype(np.int32))[None]
  for kwargs in ({}, dict(q_segment_ids=seg, kv_segment_ids=seg)):
    plain = attn.attention(q, k, v, implementation="xla", **kwargs)
    blocked = attn.attention(q, k, v, implementation="blocked", **kwargs)
    assert_close(blocked, plain, what=f"xla vs blocked {sorted(kwargs)}")
  half = attn.attention(q.astype(jnp.float16), k.astype(jnp.float16), v.astype(jnp.float16), implementation="blocked")
  assert half.dtype == jnp.float16
  assert attn._choose(q, k, False) == "xla"
  long = jax.ShapeDtypeStruct((1, 4096, 2, 8), jnp.float32)
  assert attn._choose(long, long, True) == "blocked"
  with pytest.raises(ValueError, match="implementation"):
    attn.attention(q, k, v, implementation="nope")
  with pytest.raises(ValueError, match="both"):
    attn.attention(q, k, v, q_segment_ids=seg)


def test_forward_mode_jvp_under_context():
  """jax.jvp through the blocked path (continuous distillation) works inside forward_mode_autodiff()."""
  _, q, k, v = _inputs(7, 1, 21, 21, 2, 4)
  seg = jnp.asarray(np.r_[np.zeros(12), np.ones(9)].astype(np.int32))[None]
  tangents = tuple(x * 0.3 + 0.1 for x in (k, v, q))
  f = lambda q, k, v: attn.blocked_attention(q, k, v, seg, seg, block_q=8, block_k=8)

  def jvp_blocked(*a):
    with attn.forward_mode_autodiff():
      return jax.jvp(f, a, tangents)

  out, tangent = jax.jit(jvp_blocked)(q, k, v)
  expected, expected_tangent = jax.jvp(lambda *a: _reference(*a, seg, seg), (q, k, v), tangents)
  assert_close(out, expected, what="primal")
  assert_close(tangent, expected_tangent, atol=2e-5, rtol=1e-4, what="tangent")


def test_backend_choice(monkeypatch):
  """GPU: never the blocked loop: cuDNN for half precision, varlen for packed segments, XLA's exact
  path for float32; TPU: splash when shipped."""
  half = jax.ShapeDtypeStruct((1, 4096, 2, 64), jnp.bfloat16)
  full = jax.ShapeDtypeStruct((1, 4096, 2, 64), jnp.float32)
  short = jax.ShapeDtypeStruct((1, 64, 2, 64), jnp.float32)
  packing = attn.Packing(2)
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert (attn._choose(half, half, False), attn._choose(half, half, True, packing)) == ("cudnn", "varlen")
  assert (attn._choose(full, full, True, packing), attn._choose(full, full, True)) == ("varlen", "xla")
  assert (attn._choose(full, full, False), attn._choose(short, short, False)) == ("xla", "xla")
  monkeypatch.setattr(jax, "default_backend", lambda: "tpu")
  assert attn._choose(full, full, True) == ("splash" if attn._splash_module() is not None else "blocked")
