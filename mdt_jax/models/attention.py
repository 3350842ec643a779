"""The one attention function of the project (dense, masked by segment ids, self and cross).

Every model calls :func:`attention`; making it faster happens here, in place. Implementations:

- ``"xla"``: ``jax.nn.dot_product_attention``'s XLA path, the plain formula. It materialises the
  [B, H, Lq, Lk] scores (and, for segment ids, the [B, 1, Lq, Lk] mask); fastest for short
  sequences on CPU.
- ``"blocked"``: flash-style attention written in JAX, for any backend: queries in blocks of
  ``block_q``, an online softmax over key blocks of ``block_k``, heads before tokens ([B, H, L, D])
  in the core, and a ``jax.custom_vjp`` whose backward recomputes the scores block by block from the
  saved output and log-sum-exp, so neither pass holds an Lq x Lk matrix. With segment ids, a
  (query block, key block) pair whose segment-id ranges do not overlap is skipped (``lax.cond``;
  rows of a sample are contiguous in the sparse layout, so most cross-sample pairs are skipped).
- ``"varlen"``: packed segments (the sparse layout: each sample's rows contiguous, padding rows
  anywhere) regrouped into a padded [S, capacity] batch, one row per segment, and handed to a dense
  kernel with per-segment query and key lengths (``jax.nn.dot_product_attention``'s
  ``query_seq_lengths`` / ``key_value_seq_lengths``): cuDNN flash attention for bf16/fp16 on GPU,
  XLA's path otherwise; then scattered back. Needs the static :class:`Packing` (number of
  segments, rows per segment), which the sparse model passes. No query meets a key of another
  segment, so no cross-sample FLOPs are spent.
- ``"cudnn"``: cuDNN flash attention through ``jax.nn.dot_product_attention`` (GPU, bf16/fp16, no
  segment ids).
- ``"splash"``: the Pallas splash-attention kernel that jax ships for TPU (segment ids native).

Forward-mode autodiff (``jax.jvp``) cannot pass a ``custom_vjp``: code that takes a JVP through a
network wraps it in ``with forward_mode_autodiff():``, under which the blocked path is traced as
plain scans (JAX differentiates them forward; nothing of size Lq x Lk is stored either).

``implementation=None`` (or ``MDT_ATTENTION=<name>`` in the environment) chooses automatically:

| backend | inputs | choice | why (measured) |
|---|---|---|---|
| CPU | Lq x Lk < ``BLOCKED_FROM_SCORES`` per head | ``xla`` | ``launch/benchmark.py --only=attention``: level or faster below 256 x 256 |
| CPU | longer | ``blocked`` | 4,096 tokens, 16 x 64 heads, 2 cores (jax 0.12.1): 4.6x (fwd) / 1.7x (fwd+bwd) faster than ``xla``, 1/16 of its planned memory |
| GPU | segment ids + ``packing`` | ``varlen`` (cuDNN for bf16/fp16, XLA for float32) | H200, 4,096 tokens, 16 x 64 heads, B=4, fwd / fwd+bwd: cuDNN 0.92 / 2.9 ms, XLA 4.0 / 12.4 ms, ``blocked`` 9.8 / 25.9 ms |
| GPU | bf16/fp16, no segment ids | ``cudnn`` | same measurement |
| GPU | float32 (or segment ids without ``packing``) | ``xla`` | the fastest exact float32 path of the three above (cuDNN takes no float32); it stores the Lq x Lk scores |
| TPU | any | ``splash`` when the kernel imports, else as on CPU | |

The GPU figures are from one H200 (jax 0.11.2, the project at 96ee7a6); ``--suite=gpu`` of
``launch/benchmark.py`` measures every implementation side by side, ``varlen`` included.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla", "blocked", "varlen", "cudnn", "splash")
# CPU crossover: the blocked path is faster from this many scores per head (Lq * Lk) on; measured
# (launch/benchmark.py --only=attention): already 1.5-2x faster at 256 x 256, level or slower below.
BLOCKED_FROM_SCORES = 256 * 256
BLOCK_Q = 512
BLOCK_K = 512
SINGLE_KV_BLOCK_MAX = 2048   # up to this many keys, one key block (no padding, no mask; e.g. 1,374 cond tokens)
_MASKED = -1e30          # finite "minus infinity": fully masked rows stay NaN-free
_PAD_Q = jnp.iinfo(jnp.int32).min + 1   # segment ids of rows added to fill the last block
_PAD_K = jnp.iinfo(jnp.int32).min
_FORWARD_MODE = contextvars.ContextVar("mdt_attention_forward_mode", default=False)


@jax.tree_util.register_static      # no leaves: passes jit, remat and vmap boundaries as static data
@dataclasses.dataclass(frozen=True)
class Packing:
  """Static shape of packed segments, for the ``varlen`` path: real rows carry segment ids in
  [0, ``num_segments``); a segment holds at most ``q_capacity`` query and ``kv_capacity`` key rows
  (None: the sequence length, always enough). A segment past its capacity makes its rows' output NaN."""
  num_segments: int
  q_capacity: int | None = None
  kv_capacity: int | None = None


@contextlib.contextmanager
def forward_mode_autodiff():
  """Attention traced inside this block supports ``jax.jvp`` (the blocked path without its custom VJP)."""
  token = _FORWARD_MODE.set(True)
  try:
    yield
  finally:
    _FORWARD_MODE.reset(token)


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
              q_segment_ids: jax.Array | None = None,
              kv_segment_ids: jax.Array | None = None,
              packing: Packing | None = None,
              implementation: str | None = None) -> jax.Array:
  """Softmax attention ``softmax(q k^T / sqrt(d)) v`` per head.

  Args:
    q: [B, Lq, H, D]. k, v: [B, Lk, H, D].
    q_segment_ids: optional [B, Lq] int; a query attends only to keys of the same segment id.
      Padding rows get a segment id that no real row uses (e.g. -1); their output is finite and
      meaningless (callers mask it), and no NaN reaches the gradients.
    kv_segment_ids: optional [B, Lk] int, required together with ``q_segment_ids``.
    packing: optional static :class:`Packing` of the segments (enables ``varlen``).
    implementation: None (automatic, see the module docstring), or one of ``IMPLEMENTATIONS``.
  Returns:
    [B, Lq, H, D] in q's dtype.
  """
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("attention: pass both q_segment_ids and kv_segment_ids, or neither")
  segmented = q_segment_ids is not None
  impl = implementation or os.environ.get("MDT_ATTENTION") or _choose(q, k, segmented, packing)
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"attention: implementation must be one of {IMPLEMENTATIONS}, got {impl!r}")
  backend = jax.default_backend()
  dtype = q.dtype
  if dtype != jnp.float32 and backend == "cpu":
    # XLA:CPU has no half-precision dot with float32 accumulation: compute in float32.
    q, k, v = (a.astype(jnp.float32) for a in (q, k, v))
  if impl == "cudnn":
    if segmented:
      raise ValueError("attention: the cudnn implementation takes no segment ids (use varlen)")
    out = jax.nn.dot_product_attention(q, k, v, implementation="cudnn")
  elif impl == "varlen":
    if not segmented or packing is None:
      raise ValueError("attention: the varlen implementation needs segment ids and a Packing")
    out = varlen_attention(q, k, v, q_segment_ids, kv_segment_ids, packing)
  elif impl == "splash":
    out = _splash(q, k, v, q_segment_ids, kv_segment_ids)
  elif impl == "blocked":
    out = blocked_attention(q, k, v, q_segment_ids, kv_segment_ids)
  else:
    out = _plain(q, k, v, q_segment_ids, kv_segment_ids)
  return out.astype(dtype)


def _choose(q, k, segmented: bool, packing: Packing | None = None) -> str:
  backend = jax.default_backend()
  long = q.shape[1] * k.shape[1] >= BLOCKED_FROM_SCORES
  if backend == "gpu":
    if segmented:
      return "varlen" if packing is not None else "xla"
    return "cudnn" if q.dtype in (jnp.bfloat16, jnp.float16) else "xla"
  if backend == "tpu" and _splash_module() is not None:
    return "splash"
  return "blocked" if long else "xla"


def _plain(q, k, v, q_segment_ids, kv_segment_ids):
  """The plain formula (XLA's path), [B, L, H, D]."""
  mask = None
  if q_segment_ids is not None:
    mask = (q_segment_ids[:, None, :, None] == kv_segment_ids[:, None, None, :])  # [B, 1, Lq, Lk]
    # A query with no key of its own segment would softmax over nothing: let it see everything
    # (its output is discarded by the caller) so that no NaN reaches the gradients.
    mask = mask | ~jnp.any(mask, axis=-1, keepdims=True)
  return jax.nn.dot_product_attention(q, k, v, mask=mask)


# ----------------------------------------------------------------------------------------------
# Packed segments regrouped for a dense kernel with sequence lengths.

def varlen_attention(q, k, v, q_segment_ids, kv_segment_ids, packing: Packing, *, kernel: str | None = None):
  """Packed segments -> [S, capacity] per batch row -> a dense kernel with lengths -> packed.

  q [B, Lq, H, D], k, v [B, Lk, H, D], segment ids [B, L] (see :func:`attention`). ``kernel``:
  ``"cudnn"`` or ``"xla"`` (default: cuDNN for bf16/fp16 on GPU, else XLA). Padding query rows get
  0; the rows of a segment with more query or key rows than its capacity get NaN.
  """
  if kernel is None:
    half = q.dtype in (jnp.bfloat16, jnp.float16)
    kernel = "cudnn" if half and jax.default_backend() == "gpu" else "xla"
  s = packing.num_segments
  cap_q, cap_k = packing.q_capacity or q.shape[1], packing.kv_capacity or k.shape[1]

  def one_row(q, k, v, q_seg, kv_seg):
    q_slot, q_len, q_over = _segment_slots(q_seg, s, cap_q)
    k_slot, k_len, k_over = _segment_slots(kv_seg, s, cap_k)
    padded = lambda x, slot, cap: jnp.zeros((s * cap,) + x.shape[1:], x.dtype).at[slot].set(
        x, mode="drop").reshape(s, cap, *x.shape[1:])
    # A segment without keys (absent sample) still gets one zero key: finite rows, no NaN gradient.
    out = jax.nn.dot_product_attention(padded(q, q_slot, cap_q), padded(k, k_slot, cap_k), padded(v, k_slot, cap_k),
                                       query_seq_lengths=q_len, key_value_seq_lengths=jnp.maximum(k_len, 1),
                                       implementation=kernel)
    out = out.reshape(s * cap_q, *out.shape[2:]).at[q_slot].get(mode="fill", fill_value=0)
    overflow = (q_over | k_over)[jnp.clip(q_seg, 0, s - 1)] & (q_seg >= 0) & (q_seg < s)
    return jnp.where(overflow[:, None, None], jnp.nan, out)

  return jax.vmap(one_row)(q, k, v, q_segment_ids, kv_segment_ids)


def _segment_slots(segment_ids, num_segments: int, capacity: int):
  """[L] segment ids -> (slot [L] int32: segment * capacity + rank within the segment, or
  ``num_segments * capacity`` (dropped) on padding and past the capacity; lengths [S] int32 (at most
  the capacity); overflow [S] bool: the segment has more rows than the capacity)."""
  member = segment_ids[:, None] == jnp.arange(num_segments, dtype=segment_ids.dtype)[None]   # [L, S]
  seg = jnp.clip(segment_ids, 0, num_segments - 1)
  rank = jnp.take_along_axis(jnp.cumsum(member, 0, dtype=jnp.int32), seg[:, None].astype(jnp.int32), 1)[:, 0] - 1
  kept = jnp.any(member, 1) & (rank < capacity)
  slot = jnp.where(kept, seg * capacity + rank, num_segments * capacity).astype(jnp.int32)
  counts = jnp.sum(member, 0, dtype=jnp.int32)
  return slot, jnp.minimum(counts, capacity), counts > capacity


# ----------------------------------------------------------------------------------------------
# Blocked (flash-style) attention in JAX.

def blocked_attention(q, k, v, q_segment_ids=None, kv_segment_ids=None, *, block_q: int | None = None,
                      block_k: int | None = None):
  """Flash-style attention, [B, L, H, D] in and out (see the module docstring).

  A sequence no longer than its block size is one block (no padding); so are up to
  ``SINGLE_KV_BLOCK_MAX`` keys unless ``block_k`` is given. Otherwise a sequence is padded to a
  multiple of its block and the padded keys are masked. float32 inside.
  """
  b, lq, h, d = q.shape
  lk = k.shape[1]
  bq = min(block_q or BLOCK_Q, lq)
  bk = min(block_k or (lk if lk <= SINGLE_KV_BLOCK_MAX else BLOCK_K), lk)
  pq, pk = -lq % bq, -lk % bk
  segmented = q_segment_ids is not None
  if pk and not segmented:
    q_segment_ids = jnp.zeros((b, lq), jnp.int32)
    kv_segment_ids = jnp.zeros((b, lk), jnp.int32)
    segmented = True
  if segmented:
    q_segment_ids = jnp.pad(q_segment_ids.astype(jnp.int32), ((0, 0), (0, pq)), constant_values=_PAD_Q)
    kv_segment_ids = jnp.pad(kv_segment_ids.astype(jnp.int32), ((0, 0), (0, pk)), constant_values=_PAD_K)
  heads_first = lambda x, p: jnp.pad(x.astype(jnp.float32), ((0, 0), (0, p), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  flash = (lambda *a: _flash_forward(*a)[0]) if _FORWARD_MODE.get() else _flash
  out = flash(heads_first(q, pq), heads_first(k, pk), heads_first(v, pk), q_segment_ids, kv_segment_ids, bq, bk)
  return out.transpose(0, 2, 1, 3)[:, :lq]


def _blocks(x, size, axis):
  """Splits ``axis`` into [n, size] and moves n to the front."""
  shape = x.shape[:axis] + (x.shape[axis] // size, size) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _unblocks(x, axis):
  """Inverse of ``_blocks``: [n, ..., size, ...] -> [..., n * size, ...]."""
  x = jnp.moveaxis(x, 0, axis)
  return x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2:])


def _scan(f, init, xs):
  """``lax.scan``, or a plain call when there is one step (no loop for XLA to compile)."""
  if jax.tree.leaves(xs)[0].shape[0] > 1:
    return jax.lax.scan(f, init, xs)
  carry, y = f(init, jax.tree.map(lambda a: a[0], xs))
  return carry, jax.tree.map(lambda a: a[None], y)


def _map(f, xs):
  return _scan(lambda _, x: (None, f(x)), None, xs)[1]


def _ranges(seg, size):
  """Per block of ``size`` rows: (min, max) segment id, each [n, B]."""
  s = _blocks(seg, size, 1)
  return s.min(-1), s.max(-1)


def _overlap(q_range, k_range):
  """Whether any (query, key) pair of two blocks can share a segment, over the whole batch."""
  return jnp.any((q_range[0] <= k_range[1]) & (k_range[0] <= q_range[1]))


def _scores(qi, kj, qs, ks):
  """[B, H, bq, bk] float32 scores of the (pre-scaled) queries and the (broadcast) mask, or None
  without segment ids."""
  s = jnp.einsum("bhqd,bhkd->bhqk", qi, kj, preferred_element_type=jnp.float32)
  if qs is None:
    return s, None
  mask = (qs[:, None, :, None] == ks[:, None, None, :])
  return jnp.where(mask, s, _MASKED), mask


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _flash(q, k, v, q_seg, k_seg, bq, bk):
  """q [B, H, Lq, D], k, v [B, H, Lk, D] float32 with Lq % bq == Lk % bk == 0 -> [B, H, Lq, D]."""
  return _flash_forward(q, k, v, q_seg, k_seg, bq, bk)[0]


def _flash_forward(q, k, v, q_seg, k_seg, bq, bk):
  b, h, lq, d = q.shape
  segmented = q_seg is not None
  k_blocks, v_blocks = _blocks(k, bk, 2), _blocks(v, bk, 2)
  k_seg_blocks = _blocks(k_seg, bk, 1) if segmented else None
  k_ranges = _ranges(k_seg, bk) if segmented else None

  def one_q_block(inputs):
    qi, qs, q_range = inputs

    def step(carry, kv):
      m, l, acc = carry

      def update(_):
        s, mask = _scores(qi, kv[0], qs, kv[2] if segmented else None)
        m_new = jnp.maximum(m, s.max(-1))
        p = jnp.exp(s - m_new[..., None])
        corr = jnp.exp(m - m_new)
        pv = jnp.einsum("bhqk,bhkd->bhqd", p, kv[1], preferred_element_type=jnp.float32)
        return m_new, l * corr + p.sum(-1), acc * corr[..., None] + pv

      if segmented:
        return jax.lax.cond(_overlap(q_range, (kv[3], kv[4])), update, lambda _: carry, None), None
      return update(None), None

    init = (jnp.full((b, h, bq), -jnp.inf, jnp.float32), jnp.zeros((b, h, bq), jnp.float32),
            jnp.zeros((b, h, bq, d), jnp.float32))
    xs = (k_blocks, v_blocks) + ((k_seg_blocks,) + k_ranges if segmented else ())
    (m, l, acc), _ = _scan(step, init, xs)
    seen = l > 0      # False only for rows whose every key block was skipped (no key of their segment)
    out = acc / jnp.where(seen, l, 1.0)[..., None]
    lse = jnp.where(seen, m + jnp.log(jnp.where(seen, l, 1.0)), jnp.inf)
    return out, lse

  q_blocks = _blocks(q * (1.0 / math.sqrt(d)), bq, 2)
  if segmented:
    out, lse = _map(one_q_block, (q_blocks, _blocks(q_seg, bq, 1), _ranges(q_seg, bq)))
  else:
    out, lse = _map(lambda qi: one_q_block((qi, None, None)), q_blocks)
  out, lse = _unblocks(out, 2), _unblocks(lse, 2)
  return out, (q, k, v, q_seg, k_seg, out, lse)


def _flash_fwd(q, k, v, q_seg, k_seg, bq, bk):
  return _flash_forward(q, k, v, q_seg, k_seg, bq, bk)


def _flash_bwd(bq, bk, residuals, d_out):
  q, k, v, q_seg, k_seg, out, lse = residuals
  b, h, lq, d = q.shape
  lk = k.shape[2]
  scale = 1.0 / math.sqrt(d)
  segmented = q_seg is not None
  delta = jnp.sum(d_out * out, -1)                                   # [B, H, Lq]
  k_blocks, v_blocks = _blocks(k, bk, 2), _blocks(v, bk, 2)
  k_xs = (k_blocks, v_blocks) + ((_blocks(k_seg, bk, 1),) + _ranges(k_seg, bk) if segmented else ())
  q_xs = (_blocks(q * scale, bq, 2), _blocks(d_out, bq, 2), _blocks(lse, bq, 2), _blocks(delta, bq, 2))
  q_xs += (_blocks(q_seg, bq, 1),) + _ranges(q_seg, bq) if segmented else ()

  def one_q_block(dkv, inputs):
    qi, doi, lsei, deltai = inputs[:4]

    def step(dqi, kv):
      def grads(_):
        s, mask = _scores(qi, kv[0], inputs[4] if segmented else None, kv[2] if segmented else None)
        p = jnp.exp(s - lsei[..., None])
        dv = jnp.einsum("bhqk,bhqd->bhkd", p, doi, preferred_element_type=jnp.float32)
        dp = jnp.einsum("bhqd,bhkd->bhqk", doi, kv[1], preferred_element_type=jnp.float32)
        ds = p * (dp - deltai[..., None])
        if mask is not None:
          ds = jnp.where(mask, ds, 0.0)
        dq = jnp.einsum("bhqk,bhkd->bhqd", ds, kv[0], preferred_element_type=jnp.float32)
        dk = jnp.einsum("bhqk,bhqd->bhkd", ds, qi, preferred_element_type=jnp.float32)
        return dqi + dq, (dk, dv)

      if segmented:
        skip = lambda _: (dqi, (jnp.zeros((b, h, bk, d), jnp.float32),) * 2)
        return jax.lax.cond(_overlap((inputs[5], inputs[6]), (kv[3], kv[4])), grads, skip, None)
      return grads(None)

    dqi, (dk, dv) = _scan(step, jnp.zeros_like(qi), k_xs)
    dkv = (dkv[0] + _unblocks(dk, 2), dkv[1] + _unblocks(dv, 2))
    return dkv, dqi

  zeros = jnp.zeros((b, h, lk, d), jnp.float32)
  (dk, dv), dq = _scan(one_q_block, (zeros, zeros), q_xs)
  return _unblocks(dq, 2) * scale, dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)


# ----------------------------------------------------------------------------------------------
# TPU: the Pallas splash-attention kernel shipped with jax (not exercised on CPU).

def _splash_module():
  try:
    from jax.experimental.pallas.ops.tpu import splash_attention
  except ImportError:
    return None
  return splash_attention


def _splash(q, k, v, q_segment_ids, kv_segment_ids):
  """Splash attention per batch element ([H, L, D] layout), lengths padded to multiples of 128 and
  the padding masked through segment ids. TPU only."""
  sa = _splash_module()
  if sa is None or jax.default_backend() != "tpu":
    raise ValueError("attention: the splash implementation needs a TPU and jax's Pallas TPU ops")
  b, lq, h, d = q.shape
  lk = k.shape[1]
  pq, pk = -lq % 128, -lk % 128
  if q_segment_ids is None:
    q_segment_ids = jnp.zeros((b, lq), jnp.int32)
    kv_segment_ids = jnp.zeros((b, lk), jnp.int32)
  q_seg = jnp.pad(q_segment_ids.astype(jnp.int32), ((0, 0), (0, pq)), constant_values=_PAD_Q)
  k_seg = jnp.pad(kv_segment_ids.astype(jnp.int32), ((0, 0), (0, pk)), constant_values=_PAD_K)
  mask = sa.MultiHeadMask([sa.FullMask((lq + pq, lk + pk)) for _ in range(h)])
  kernel = sa.make_splash_mha_single_device(mask)
  heads_first = lambda x, p: jnp.pad(x, ((0, 0), (0, p), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
  qh = heads_first(q, pq) / math.sqrt(d)       # the kernel does not scale
  out = jax.vmap(lambda qi, ki, vi, qs, ks: kernel(qi, ki, vi, segment_ids=sa.SegmentIds(qs, ks)))(
      qh, heads_first(k, pk), heads_first(v, pk), q_seg, k_seg)
  return out.transpose(0, 2, 1, 3)[:, :lq]
