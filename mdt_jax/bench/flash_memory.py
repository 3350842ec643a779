"""A stand-in for a flash-attention kernel in ahead-of-time memory plans (launch/train_memory.py).

XLA:CPU's attention paths store what a GPU's or TPU's flash kernel does not (the plain path's
Lq x Lk scores, the blocked path's float32 per-block stacks). Compiled in place of every attention
call, :func:`flash_memory_attention` has a flash kernel's memory and nothing else: its inputs, its
output, and the residuals such a kernel saves for the backward pass (q, k, v, out and a float32
log-sum-exp per query and head); no array of Lq x Lk. Its values are meaningless: programs built
with it are compiled for their memory plan, never run.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def _stand_in(q, k, v):
  return q + jnp.mean(v, axis=1, keepdims=True).astype(q.dtype)


def _stand_in_fwd(q, k, v):
  out = _stand_in(q, k, v)
  return out, (q, k, v, out, jnp.sum(q.astype(jnp.float32), axis=-1))   # lse: [B, Lq, H] float32


def _stand_in_bwd(residuals, d_out):
  q, k, v, out, lse = residuals             # every residual is used, so each stays live until here
  s = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32)) + jnp.sum(lse)
  return ((d_out * s).astype(q.dtype), (k * jnp.mean(q.astype(jnp.float32))).astype(k.dtype),
          (v * s).astype(v.dtype))


_stand_in.defvjp(_stand_in_fwd, _stand_in_bwd)


def flash_memory_attention(q, k, v, **_):
  """``attention``'s signature: q [B, Lq, H, D], k, v [B, Lk, H, D] -> [B, Lq, H, D]; the segment ids
  and packing only steer which kernel would run, so they do not change the memory."""
  return _stand_in(q, k, v)


def install():
  """Makes every model of this process call the stand-in (for a memory-plan-only process)."""
  from mdt_jax.models import dinov2, transformer
  transformer.attention = flash_memory_attention
  dinov2.attention = flash_memory_attention
