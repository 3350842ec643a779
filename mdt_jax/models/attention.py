"""The one attention function of the project (dense, masked by segment ids, self and cross).

Every model calls :func:`attention`; making it faster happens here, in place.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
              q_segment_ids: jax.Array | None = None,
              kv_segment_ids: jax.Array | None = None) -> jax.Array:
  """Softmax attention ``softmax(q k^T / sqrt(d)) v`` per head.

  Args:
    q: [B, Lq, H, D]. k, v: [B, Lk, H, D].
    q_segment_ids: optional [B, Lq] int; a query attends only to keys of the same segment id.
      Padding rows get a segment id that no real row uses (e.g. -1); their output is finite and
      meaningless (callers mask it).
    kv_segment_ids: optional [B, Lk] int, required together with ``q_segment_ids``.
  Returns:
    [B, Lq, H, D] in q's dtype.
  """
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("attention: pass both q_segment_ids and kv_segment_ids, or neither")
  mask = None
  if q_segment_ids is not None:
    mask = (q_segment_ids[:, None, :, None] == kv_segment_ids[:, None, None, :])  # [B, 1, Lq, Lk]
    # A query with no key of its own segment would softmax over nothing: let it see everything
    # (its output is discarded by the caller) so that no NaN reaches the gradients.
    mask = mask | ~jnp.any(mask, axis=-1, keepdims=True)
  if q.dtype != jnp.float32 and jax.default_backend() == "cpu":
    # XLA:CPU has no half-precision dot with float32 accumulation: compute in float32.
    out = jax.nn.dot_product_attention(*(a.astype(jnp.float32) for a in (q, k, v)), mask=mask)
    return out.astype(q.dtype)
  return jax.nn.dot_product_attention(q, k, v, mask=mask)
