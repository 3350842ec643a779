"""Analytic model FLOPs of one forward pass (multiply-adds count 2; matmuls and attention only --
norms, activations and the softmax's exponentials are not counted, as in the usual MFU convention).

Transformer trunk, per sample, per block, with N tokens of width C, M condition tokens of width Cc and
MLP ratio r:

    (12 + 4 r) N C^2          qkv (6), self out (2), cross q (2), cross out (2), MLP (4 r)
    + 4 N^2 C + 4 N M C       self and cross attention (q k^T and p v, all heads)
    + 4 M Cc C + 12 C^2       cross k, v projections; adaLN modulation

plus the input/output layers (2 N Cin C + 2 N C Cout) and the time embedder (2 (256 C + C^2)).
The SLat flow's sparse convolutions count 2 * 27 * N_out * Cin * Cout each (every neighbour present,
an upper bound on a surface), its 1x1 skip projections 2 N Cin Cout. A backward pass counts twice
its forward (forward + backward = 3x); a JVP counts once more (its tangent pass). A training step
counts the sum over its network evaluations (see ``mdt_jax.bench.evals``).
"""
from __future__ import annotations


def trunk(n: float, c: int, m: int, cc: int, r: float, blocks: int, *, self_pairs: float | None = None) -> float:
  """The transformer blocks for one sample; ``self_pairs`` = N^2 unless given (N_b^2 summed)."""
  pairs = n * n if self_pairs is None else self_pairs
  per_block = (12 + 4 * r) * n * c * c + 4 * pairs * c + 4 * n * m * c + 4 * m * cc * c + 12 * c * c
  return blocks * per_block + 2 * (256 * c + c * c)


def ss_flow(model, cond_tokens: int) -> float:
  """Forward FLOPs of a SparseStructureFlowModel for one sample."""
  n = (model.resolution // model.patch_size) ** 3
  cin = model.in_channels * model.patch_size ** 3
  cout = model.out_channels * model.patch_size ** 3
  c = model.model_channels
  return trunk(n, c, cond_tokens, model.cond_channels, model.mlp_ratio, model.num_blocks) + 2 * n * c * (cin + cout)


def trellis2_flow(model, tokens: int, cond_tokens: int) -> float:
  """Forward FLOPs of a TRELLIS.2 flow (dense or sparse: one token per voxel, no patchify, no U-Net) for
  one sample of ``tokens`` tokens; its MLP's hidden width is ``int(C * mlp_ratio)``."""
  c = model.model_channels
  r = int(c * model.mlp_ratio) / c
  trunk_flops = trunk(tokens, c, cond_tokens, model.cond_channels, r, model.num_blocks)
  return trunk_flops + 2 * tokens * c * (model.in_channels + model.out_channels)


def _conv(n, cin, cout):
  return 2 * 27 * n * cin * cout


def _res_block(n_out, cin, cout):
  return _conv(n_out, cin, cout) + _conv(n_out, cout, cout) + (2 * n_out * cin * cout if cin != cout else 0)


def slat_flow(model, voxels: int, tokens: int, cond_tokens: int) -> float:
  """Forward FLOPs of a SLatFlowModel for one sample of ``voxels`` active voxels whose coarsest level
  (the transformer's tokens) has ``tokens`` sites (= voxels without io stages)."""
  c, stages, k = model.model_channels, list(model.stages), model.num_io_res_blocks
  if len(stages) > 1:
    raise NotImplementedError("slat_flow FLOPs: one io stage (TRELLIS's configs) is counted")
  flops = 2 * voxels * model.in_channels * (stages[0] if stages else c)
  if stages:
    s = stages[0]
    flops += (k - 1) * _res_block(voxels, s, s) + _res_block(tokens, s, c)                 # input blocks
    skip = 2 if model.use_skip_connection else 1       # skip connections concatenate channels
    flops += _res_block(voxels, skip * c, s) + (k - 1) * _res_block(voxels, skip * s, s)  # out blocks
  flops += trunk(tokens, c, cond_tokens, model.cond_channels, model.mlp_ratio, model.num_blocks)
  flops += 2 * voxels * (stages[0] if stages else c) * model.out_channels
  return flops


def attention(b: int, h: int, lq: int, lk: int, d: int) -> float:
  """softmax(q k^T) v forward: two matmuls of 2 Lq Lk D per head."""
  return 4.0 * b * h * lq * lk * d
