"""Speed benchmarks, measured side by side in one run, against this device's measured matmul rate.

    python launch/benchmark.py --quick --out=/tmp/bench.json     # < 5 minutes on 2 CPU cores
    python launch/benchmark.py                                   # every section at the real sizes
    python launch/benchmark.py --only=attention,ss_forward --ss_sizes=tiny,L
    python launch/benchmark.py --only=slat_forward --slat_sizes=tiny,L --slat_voxels=5000,20000
    python launch/benchmark.py --only=ss_forward,distill_step --ss_sizes=L --step_sizes=ss:L --dtype=bfloat16

Sections (``--only``): matmul (always run first: float32 GEMM, bfloat16 where the device has it),
attention (plain vs blocked at 4,096 tokens, forward and forward+backward, and the crossover),
ss_forward / slat_forward (forward and forward+backward of the SS and SLat flows), distill_step (one
AdamW training step of each objective, its network evaluations, and for VM+VD the evaluations timed
alone), sampling (1/2/4/25 steps with and without CFG, and the 25-step-CFG / 1-step ratios),
train_memory (AOT per-device memory of the L train steps on 32 forced devices; only when named).

Every measurement: compile time apart from run time, median run time over ``--repeats`` calls of the
compiled executable, XLA's peak-memory plan, model FLOPs (analytic; formulas in
``mdt_jax/bench/flops.py``), achieved FLOP/s and the fraction of the measured GEMM rate. A markdown
table goes to stdout at the end; ``--out FILE.json`` writes every figure.
"""
import importlib
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from conversion import trellis
from mdt_jax import cli, numerics, stages
from mdt_jax.bench import flops as model_flops
from mdt_jax.bench import objectives as obj
from mdt_jax.bench.measure import Report, Result, gemm_throughput, measure
from mdt_jax.models import registry
from mdt_jax.train.state import init_state
from mdt_jax.train.step import make_train_step

_ONLY = flags.DEFINE_list("only", [], "Sections to run (default: all).")
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes and one timed call each: under 5 minutes on 2 CPU cores.")
_OUT = flags.DEFINE_string("out", None, "Write every figure to this JSON file.")
_SUITE = flags.DEFINE_enum("suite", None, ["gpu"], "A preset of sections and sizes (flags given explicitly win): "
                           "gpu = bf16 SS L at B=1,8, SLat L at 5k/20k/32,768 voxels, VM+VD steps of both stages, "
                           "sampling, attention per implementation (under 8 minutes on one H100/H200); with "
                           "--quick, the same sections at tiny sizes (CPU, CI).")
_DTYPE = flags.DEFINE_enum("dtype", None, list(numerics.COMPUTE_DTYPES),
                           "Compute dtype of the models and attention inputs (params stay float32); fractions "
                           "are then of this dtype's GEMM rate (default float32; bfloat16 with --suite=gpu).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median reported; 1 with --quick).")
_SS_SIZES = flags.DEFINE_list("ss_sizes", None, "SS-flow configs for ss_forward: tiny, M, L "
                              "(default tiny,L; --quick tiny,M).")
_SS_BATCHES = flags.DEFINE_list("ss_batches", ["1"], "Batch sizes of ss_forward.")
_SLAT_SIZES = flags.DEFINE_list("slat_sizes", None, "SLat-flow configs for slat_forward: tiny, L "
                                "(default tiny,L; --quick tiny).")
_SLAT_VOXELS = flags.DEFINE_list("slat_voxels", None, "Active voxels of the one 64^3 sample "
                                  "(default 5000,20000; --quick 5000).")
_SLAT_L_MAX = flags.DEFINE_integer("slat_L_max_voxels", 20000, "Largest voxel count run with the SLat L config.")
_SLAT_STREAM = flags.DEFINE_integer("slat_stream", 24, "Batches in slat_forward's compile-count stream (0: skip).")
_STEP_SIZES = flags.DEFINE_list("step_sizes", None, "distill_step models: ss:tiny, slat:tiny, ss:M, ss:L, slat:L "
                                "(default all; --quick ss:tiny,slat:tiny).")
_OBJECTIVES = flags.DEFINE_list("objectives", None, "Objectives timed by distill_step (default fm,vm,vm_vd,cm; "
                                "--quick: all for ss:tiny, vm_vd for the others).")
_SAMPLING_SS = flags.DEFINE_string("sampling_ss_size", None, "SS config of the extrapolated 25-step sampling "
                                   "(default L; --quick M).")

_REPO = Path(__file__).resolve().parents[1]
_SS_L_ARGS = dict(resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
                  num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=1, pe_mode="ape", qk_rms_norm=True,
                  use_fp16=True)
SS_CONFIGS = {
    "tiny": trellis.read_config(_REPO / "tests/fixtures/trellis/ss_flow"),
    # A narrow model at the real token and condition counts (--quick): width 384, 6 heads, 4 blocks.
    "M": {"name": "SparseStructureFlowModel", "args": dict(_SS_L_ARGS, model_channels=384, num_heads=6,
                                                           num_blocks=4, use_fp16=False)},
    # TRELLIS-image-large ss_flow_img_dit_L_16l8: 555 M params, 16^3 = 4,096 tokens.
    "L": {"name": "SparseStructureFlowModel", "args": _SS_L_ARGS},
}
COND_TOKENS = {"tiny": 7, "M": 1374, "L": 1374}
SLAT_CONFIGS = {
    # The fixture's widths (32 channels, 2 blocks, io stage of 16) on the real 64^3 grid.
    "tiny": {"name": "SLatFlowModel", "args": dict(
        trellis.read_config(_REPO / "tests/fixtures/trellis/slat_flow")["args"], resolution=64)},
    # TRELLIS-image-large slat_flow_img_dit_L_64l8p2: 600 M params.
    "L": {"name": "ElasticSLatFlowModel", "args": dict(
        resolution=64, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
        num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=2, num_io_res_blocks=2,
        io_block_channels=[128], pe_mode="ape", qk_rms_norm=True, use_fp16=True)},
}
REPORT = None


def repeats():
  return 1 if _QUICK.value else _REPEATS.value


# --suite presets: flag values used unless the flag is given on the command line.
SUITES = {
    ("gpu", False): dict(only=["attention", "ss_forward", "slat_forward", "distill_step", "sampling"],
                         dtype="bfloat16", ss_sizes=["L"], ss_batches=["1", "8"], slat_sizes=["L"],
                         slat_voxels=["5000", "20000", "32768"], slat_L_max_voxels=32768, slat_stream=0,
                         step_sizes=["ss:L", "slat:L"], objectives=["vm_vd"], sampling_ss_size="L"),
    ("gpu", True): dict(only=["attention", "ss_forward", "slat_forward", "distill_step", "sampling"],
                        dtype="bfloat16", ss_sizes=["tiny"], ss_batches=["1", "2"], slat_sizes=["tiny"],
                        slat_voxels=["2000"], slat_stream=0, step_sizes=["ss:tiny", "slat:tiny"],
                        objectives=["vm_vd"], sampling_ss_size="tiny"),
}


def apply_suite():
  """Sets the flags of ``--suite`` (with ``--quick``: its tiny variant) that were not given."""
  if not _SUITE.value:
    return
  for name, value in SUITES[_SUITE.value, _QUICK.value].items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def compute_dtype():
  return numerics.compute_dtype(_DTYPE.value or "float32", field="--dtype")


def _sizes(flag, full, quick):
  return flag.value if flag.value is not None else (quick if _QUICK.value else full)


def _sum_of_squares(apply):
  """params -> d/dparams sum(out^2) (a forward+backward of the network)."""
  return lambda p, *a: jax.grad(lambda p: jnp.sum(jnp.square(apply(p, *a))))(p)


def _model(configs, size, **overrides):
  config = {"name": configs[size]["name"], "args": {**configs[size]["args"], **overrides}}
  model = registry.build_model(config, dtype=compute_dtype())
  params = jax.jit(lambda key: registry.init_params(model, key))(jax.random.key(0))
  return model, params


def _n_params(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


# ---------------------------------------------------------------------------------------------
def matmul():
  """This device's float32 GEMM rate (full precision; 4096^3); bfloat16 where the device has bf16
  matmul units (not this CPU unless it reports avx512_bf16/amx) or ``--dtype`` asks for it. The
  yardstick of every fraction is the GEMM rate in ``--dtype``."""
  n = 4096
  rates = {"float32": gemm_throughput(n, np.float32)}
  cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
  if jax.default_backend() != "cpu" or "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags:
    rates["bfloat16"] = gemm_throughput(n, jnp.bfloat16)
  else:
    REPORT.figure("bfloat16 GEMM units", "none", "this CPU has no bf16 matmul units (no avx512_bf16/amx)")
  dtype = _DTYPE.value or "float32"
  if dtype not in rates:
    rates[dtype] = gemm_throughput(n, compute_dtype())
  for name, rate in rates.items():
    REPORT.add(Result("matmul", f"{name} {n}^3 GEMM", 2 * n ** 3 / rate, flops=2 * n ** 3, notes="best of 5"))
  REPORT.gemm_flops_per_s = rates[dtype]


def _time_attention(case, q, k, v, impls, flops, both=True, **kwargs):
  """Forward (and forward+backward) of ``attention`` per implementation -> {(impl, kind): seconds}."""
  attn = importlib.import_module("mdt_jax.models.attention")
  times = {}
  for impl in impls:
    f = lambda q, k, v, impl=impl: attn.attention(q, k, v, implementation=impl, **kwargs)
    times[impl, "fwd"] = measure(REPORT, "attention", f"{impl} {case} fwd", f, q, k, v, flops=flops,
                                 repeats=repeats()).seconds
    if both:
      g = jax.grad(lambda q, k, v: jnp.sum(jnp.square(f(q, k, v).astype(jnp.float32))), argnums=(0, 1, 2))
      times[impl, "fwd+bwd"] = measure(REPORT, "attention", f"{impl} {case} fwd+bwd", g, q, k, v,
                                       flops=3 * flops, repeats=repeats()).seconds
  return times


def _qkv(b, lq, lk, h=16, d=64, seed=0):
  rng = np.random.default_rng(seed)
  return tuple(jnp.asarray(rng.standard_normal(s), compute_dtype()) for s in ((b, lq, h, d), (b, lk, h, d), (b, lk, h, d)))


def attention():
  """The one attention function at the SS flow's real sizes (batch 1, 16 heads of 64): self attention
  over 4,096 tokens and cross attention to 1,374 condition tokens, forward and forward+backward
  (FLOPs: 4 B H Lq Lk D forward, 3x that for forward+backward), plain XLA vs blocked; then the
  crossover of the two (2 x L tokens, 16 heads) that sets BLOCKED_FROM_SCORES; then segment ids (two
  samples of 2,500 tokens, the sparse layout) where the blocked path skips cross-sample blocks.
  With ``--suite``: :func:`attention_per_implementation` instead."""
  if _SUITE.value:
    return attention_per_implementation()
  pair = lambda case, lq, lk, b=1: _time_attention(case, *_qkv(b, lq, lk), ("xla", "blocked"),
                                                   model_flops.attention(b, 16, lq, lk, 64))
  times = pair("self 4096", 4096, 4096)
  for kind in ("fwd", "fwd+bwd"):
    REPORT.figure(f"attention 4096 {kind}: xla / blocked", times["xla", kind] / times["blocked", kind])
  pair("cross 4096x1374", 4096, 1374)
  crossover = [128, 512] if _QUICK.value else [64, 128, 256, 512, 1024, 2048]
  for n in crossover:
    t = pair(f"self {n} (batch 2)", n, n, b=2)
    REPORT.figure(f"attention {n} fwd+bwd: xla / blocked", t["xla", "fwd+bwd"] / t["blocked", "fwd+bwd"])
  if not _QUICK.value:
    seg = jnp.asarray(np.repeat([0, 1], 2500).astype(np.int32))[None]
    _time_attention("segments 2x2500", *_qkv(1, 5000, 5000), ("xla", "blocked"),
                    2 * model_flops.attention(1, 16, 2500, 2500, 64), q_segment_ids=seg, kv_segment_ids=seg)


def attention_per_implementation():
  """Every implementation that runs here, in --dtype, 16 heads of 64, forward and forward+backward:
  dense B=4 x L (L = 4,096; --quick 256) self attention, then the same 4 x L tokens packed into one
  sequence of 4 segments (equal, then unequal lengths: 0.25, 0.75, 1.25, 1.75 L), the sparse layout;
  the figure is packed / dense at equal total tokens (the variable-length cost)."""
  n = 256 if _QUICK.value else 4096
  half = compute_dtype() != jnp.float32
  dense_impls = ["xla", "blocked"] + (["cudnn"] if half and jax.default_backend() == "gpu" else [])
  dense = _time_attention(f"dense 4x{n}", *_qkv(4, n, n), dense_impls, model_flops.attention(4, 16, n, n, 64))
  best_dense = {kind: min(t for (impl, k), t in dense.items() if k == kind) for kind in ("fwd", "fwd+bwd")}
  attn = importlib.import_module("mdt_jax.models.attention")
  for label, lengths in (("equal", [n] * 4), ("unequal", [n // 4, 3 * n // 4, 5 * n // 4, 7 * n // 4])):
    seg = jnp.asarray(np.repeat(np.arange(4), lengths).astype(np.int32))[None]
    flops = sum(model_flops.attention(1, 16, m, m, 64) for m in lengths)
    packed = _time_attention(f"packed 4 segments {label} ({sum(lengths)} tokens)", *_qkv(1, sum(lengths), sum(lengths)),
                             ["varlen", "blocked"], flops, q_segment_ids=seg, kv_segment_ids=seg,
                             packing=attn.Packing(4, max(lengths), max(lengths)))
    for kind in ("fwd", "fwd+bwd"):
      REPORT.figure(f"attention packed {label} / best dense, {kind}", packed["varlen", kind] / best_dense[kind],
                    f"varlen {packed['varlen', kind] * 1e3:.3g} ms vs dense {best_dense[kind] * 1e3:.3g} ms; "
                    f"target <= 1.5 on GPU")


# ---------------------------------------------------------------------------------------------
def ss_forward():
  """SS flow forward and forward+backward (d/dparams of sum(v^2)) at each of ``--ss_batches``, compute
  in --dtype, at the configured sizes (M: the real token counts at width 384; L: the full 555 M-param
  config)."""
  for size in _sizes(_SS_SIZES, ["tiny", "L"], ["tiny", "M"]):
    model, params = _model(SS_CONFIGS, size)
    fwd = registry.velocity(model)
    tokens = (model.resolution // model.patch_size) ** 3
    note = f"{_n_params(params) / 1e6:.1f} M params, {tokens} tokens, {COND_TOKENS[size]} cond tokens"
    for batch in map(int, _SS_BATCHES.value):
      x, t, cond = _ss_inputs(model, size, batch)
      flops = batch * model_flops.ss_flow(model, COND_TOKENS[size])
      case = size if batch == 1 else f"{size} B={batch}"
      measure(REPORT, "ss_forward", f"{case} fwd", fwd, params, x, t, cond, flops=flops, repeats=repeats(), notes=note)
      r = measure(REPORT, "ss_forward", f"{case} fwd+bwd", _sum_of_squares(fwd), params, x, t, cond,
                  flops=3 * flops, repeats=repeats())
      # Past the available memory: rematerialised blocks (XLA:CPU's plan barely shrinks with them), then
      # half the blocks (the same per-block work, so the same utilisation; FLOPs of the half model).
      variants = [("remat blocks", {"use_checkpoint": True}),
                  (f"{model.num_blocks // 2} of {model.num_blocks} blocks", {"num_blocks": model.num_blocks // 2})]
      while r.notes == "not run (memory)" and variants:
        label, overrides = variants.pop(0)
        other, other_params = _model(SS_CONFIGS, size, **overrides)
        r = measure(REPORT, "ss_forward", f"{case} fwd+bwd ({label})", _sum_of_squares(registry.velocity(other)), other_params, x, t, cond,
                    flops=3 * batch * model_flops.ss_flow(other, COND_TOKENS[size]), repeats=repeats(),
                    notes="model FLOPs 3x forward (a recomputed forward not counted)")
        del other_params
    del params


def _ss_inputs(model, size, batch, seed=0):
  rng = np.random.default_rng(seed)
  r = model.resolution
  x = jnp.asarray(rng.standard_normal((batch, r, r, r, model.in_channels), np.float32))
  cond = jnp.asarray(rng.standard_normal((batch, COND_TOKENS[size], model.cond_channels), np.float32))
  return x, jnp.full((batch,), 0.5, jnp.float32), cond


_GRID = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)  # row-major 64^3
_CENTRE_DIST = np.linalg.norm(_GRID - 31.5, axis=1)


def _shell_voxels(n, radius=0.375, batch_index=0):
  """The n voxels of a 64^3 grid nearest a sphere of ``radius * 64`` (a surface-like SLat structure;
  the shell thickens with n) -> packed coords [n, 4] int32, lexicographic."""
  rows = np.sort(np.argpartition(np.abs(_CENTRE_DIST - radius * 64), n)[:n])
  return np.concatenate([np.full((n, 1), batch_index), _GRID[rows]], 1).astype(np.int32)


def _slat_batch(model, voxels: list[int], seed=0):
  """A SparseTensor of len(voxels) shells and its per-sample model FLOPs (sum over samples)."""
  from mdt_jax.sparse import SparseTensor
  rng = np.random.default_rng(seed)
  coords = np.concatenate([_shell_voxels(n, radius=0.375 - 0.05 * i, batch_index=i) for i, n in enumerate(voxels)])
  x = SparseTensor.from_packed(coords, rng.standard_normal((len(coords), model.in_channels)).astype(np.float32),
                               coarse_levels=len(model.stages))
  cond_tokens = COND_TOKENS["L" if model.model_channels >= 1024 else "tiny"]
  flops, tokens = 0.0, []
  for i, n in enumerate(voxels):
    c = coords[coords[:, 0] == i, 1:]
    tokens.append(len(np.unique(c // model.patch_size, axis=0)))
    flops += model_flops.slat_flow(model, n, tokens[-1], cond_tokens)
  cond = jnp.asarray(rng.standard_normal((len(voxels), cond_tokens, model.cond_channels), np.float32))
  return x, cond, flops, tokens


def slat_forward():
  """SLat flow forward and forward+backward (batch 1, compute in --dtype) on a 64^3 sample with N active
  voxels (a sphere shell), and the neighbour-table + down-sampling share; then the number of
  compilations over a stream of batches of varying sizes (capacities from ``bucket_capacity``)."""
  from mdt_jax.sparse import downsampling, neighbour_table
  for size in _sizes(_SLAT_SIZES, ["tiny", "L"], ["tiny"]):
    model, params = _model(SLAT_CONFIGS, size)
    velocity = registry.velocity(model)
    fwd = lambda p, x, t, c: velocity(p, x, t, c).feats
    structure = lambda x: (
        neighbour_table(x.coords, x.mask, resolution=64, batch_size=1),
        downsampling(x.coords, x.mask, resolution=64, batch_size=1, capacity=x.coarse_capacities[0]))
    t = jnp.asarray([0.5], jnp.float32)
    for n in map(int, _sizes(_SLAT_VOXELS, ["5000", "20000"], ["5000"])):
      if size == "L" and n > _SLAT_L_MAX.value:
        print(f"  slat_forward[{size}, {n} voxels]: skipped (--slat_L_max_voxels={_SLAT_L_MAX.value})")
        continue
      x, cond, flops, tokens = _slat_batch(model, [n])
      lookup = measure(REPORT, "slat_forward", f"{size} {n} voxels: neighbour tables + down-sampling", structure, x,
                       repeats=repeats()).seconds
      note = (f"{_n_params(params) / 1e6:.1f} M params, {n} voxels -> {tokens[0]} tokens, capacities "
              f"{x.capacity}/{x.coarse_capacities}, of which structure {lookup * 1e3:.0f} ms")
      measure(REPORT, "slat_forward", f"{size} {n} voxels fwd", fwd, params, x, t, cond, flops=flops,
              repeats=repeats(), notes=note)
      measure(REPORT, "slat_forward", f"{size} {n} voxels fwd+bwd", _sum_of_squares(fwd), params, x, t, cond,
              flops=3 * flops, repeats=repeats())
    del params
  if _SLAT_STREAM.value and not _QUICK.value:
    _slat_compile_stream()


def _slat_compile_stream():
  """Batches of 2 instances of 1k-4k voxels each: compilations of one jitted forward, and how many
  distinct (capacity, coarse capacity) programs a long stream of such batches would need."""
  from mdt_jax.sparse import SparseTensor
  model, params = _model(SLAT_CONFIGS, "tiny")
  forward = jax.jit(registry.velocity(model))
  rng = np.random.default_rng(1)
  t = jnp.asarray([0.5, 0.5], jnp.float32)
  cond = jnp.asarray(rng.standard_normal((2, COND_TOKENS["tiny"], model.cond_channels), np.float32))

  def batch():
    coords = np.concatenate([_shell_voxels(int(rng.integers(1000, 4000)), radius=rng.uniform(0.2, 0.45),
                                           batch_index=b) for b in range(2)])
    return SparseTensor.from_packed(coords, np.zeros((len(coords), model.in_channels), np.float32),
                                    coarse_levels=1)

  start, sizes = time.perf_counter(), set()
  for _ in range(_SLAT_STREAM.value):
    x = batch()
    sizes.add(int(x.mask.sum()))
    jax.block_until_ready(forward(params, x, t, cond))
  elapsed = time.perf_counter() - start
  signatures = {(x.capacity, x.coarse_capacities) for x in (batch() for _ in range(500))}
  REPORT.figure("slat compile count", forward._cache_size(),
                f"{_SLAT_STREAM.value} batches of 2 x 1k-4k voxels ({len(sizes)} distinct totals) in {elapsed:.0f} s; "
                f"500 more fall into {len(signatures)} (capacity, coarse capacity) programs")


# ---------------------------------------------------------------------------------------------
def distill_step():
  """One training step, built as training builds it (mdt_jax.train.step: loss and gradient of the
  objective, AdamW update, the non-finite guard; the state carried and donated as a training loop
  does) of each objective, for each model; its network evaluations (from the code,
  see mdt_jax.bench.objectives) and model FLOPs (their sum). For VM+VD the distinct evaluations are
  also timed alone, and the step is compared with their sum (target: step <= sum)."""
  default = ["ss:tiny", "slat:tiny", "ss:M", "ss:L", "slat:L"]
  for spec in _sizes(_STEP_SIZES, default, ["ss:tiny", "slat:tiny"]):
    kind, size = spec.split(":")
    big = size != "tiny"
    if not stages.get(kind, field=f"--step_sizes entry {spec!r}").sparse:
      model, params = _model(SS_CONFIGS, size)
      batch_size = 1 if big else 4
      x0, _, cond = _ss_inputs(model, size, batch_size)
      flops_sample = model_flops.ss_flow(model, COND_TOKENS[size])
      student = registry.build_model({"name": SS_CONFIGS[size]["name"],
                                     "args": {**SS_CONFIGS[size]["args"], "use_checkpoint": size == "L"}},
                                    dtype=compute_dtype())
    else:
      model, params = _model(SLAT_CONFIGS, size)
      voxels = [5000] if big else [2000, 2000]
      batch_size = len(voxels)
      x0, cond, flops_all, _ = _slat_batch(model, voxels)
      flops_sample = flops_all / batch_size
      student = model
    apply, teacher_apply = registry.velocity(student), registry.velocity(model)
    batch = {"x0": x0, "cond": cond}
    objectives = _OBJECTIVES.value or (["vm_vd"] if _QUICK.value and spec != "ss:tiny" else list(obj.OBJECTIVES))
    for name in objectives:
      config = obj.config_for(name)
      evals = obj.network_evaluations(config, apply, teacher_apply, params, params, batch)
      flops = sum(obj.COST[e.kind] * e.samples * flops_sample for e in evals)
      optimizer = optax.adamw(1e-4, weight_decay=0.0)
      step = make_train_step(config, optimizer, student_apply=apply, teacher_apply=teacher_apply, sparse=False)
      state = init_state(jax.tree.map(jnp.copy, params), optimizer, config.ema_rates, seed=0)
      frozen = {"teacher": params, "image_encoder": {}}
      micro_batches = jax.tree.map(lambda a: a[None], batch)     # one micro-batch
      result = measure(REPORT, "distill_step", f"{kind} {size} {name}", step, state, frozen, micro_batches,
                       flops=flops, repeats=repeats(), carry=1, donate_argnums=(0,),
                       notes=f"batch {batch_size}; {obj.describe(evals, batch_size)}")
      REPORT.figure(f"network evaluations per step [{kind} {size} {name}]", f"{len(evals)} forward passes, "
                    f"{sum(e.samples for e in evals) // batch_size} evaluations of the batch, of which "
                    f"{sum(e.samples for e in evals if e.kind != 'fwd') // batch_size} differentiated")
      if name == "vm_vd":
        total = total_cpu = 0.0
        for e in sorted(set(evals), key=lambda e: (e.network, e.kind, e.samples)):
          fn = obj.evaluation_fn(apply if e.network == "student" else teacher_apply, e.kind)
          xs = obj.evaluation_inputs(x0, cond, e.samples)
          r = measure(REPORT, "distill_step", f"{kind} {size} vm_vd: {e.network} {e.kind} x{e.samples // batch_size}",
                      fn, params, *xs, flops=obj.COST[e.kind] * e.samples * flops_sample, repeats=repeats())
          total += r.seconds * evals.count(e)
          total_cpu += r.cpu_s * evals.count(e)
        REPORT.figure(f"{kind} {size} vm_vd step / sum of its evaluations", result.seconds / total,
                      f"wall: step {result.seconds:.3g} s, evaluations {total:.3g} s; CPU time ratio "
                      f"{result.cpu_s / total_cpu:.2f}; target <= 1")
      del state
    del params


# ---------------------------------------------------------------------------------------------
def sampling():
  """Two-stage generation with the tiny fixture checkpoints (batch 1, --dtype), per stage: the SS-flow
  sampler, the SS decoder, the SLat-flow sampler on the decoded voxels, each sampler at 1, 2, 4 and
  25 steps (--quick: 1 and 25) without and with CFG (w = 3 on every step, rescale_t 3, one batched forward of 2 per step);
  the 25-step-CFG / 1-step ratios. Then the SS flow at the real token count (L; --quick: M): the
  1-step sampler timed, and 25 steps with CFG extrapolated from the timed 1- and 2-step CFG samplers
  (t25 = t1 + 24 (t2 - t1)). Samplers are jitted with the params as an argument."""
  from mdt_jax.flow import jit_sample
  from mdt_jax.generation import StageSampling, TwoStagePipeline
  fixtures = _REPO / "tests/fixtures/trellis"
  pipe = TwoStagePipeline.from_checkpoints(fixtures / "ss_flow", fixtures / "ss_dec", fixtures / "slat_flow",
                                           slat_mean=np.zeros(8), slat_std=np.ones(8), dtype=compute_dtype())
  cond = np.random.default_rng(0).standard_normal((1, COND_TOKENS["tiny"], pipe.ss_flow.cond_channels), np.float32)
  key = jax.random.key(0)
  coords = np.argwhere(pipe.structure(cond, key, StageSampling(1))[1]).astype(np.int32)
  medians = {}
  step_counts = (1, 25) if _QUICK.value else (1, 2, 4, 25)
  for steps in step_counts:
    for cfg in (0.0, 3.0):
      settings = StageSampling(steps, cfg, (0.0, 1.0), 3.0)
      runs = []
      for _ in range(1 + max(repeats(), 3)):  # the first run compiles
        runs.append({})
        pipe.structure(cond, key, settings, timings=runs[-1])
        pipe.latents(coords, cond, key, settings, timings=runs[-1])
      medians[steps, cfg] = {name: float(np.median([r[name] for r in runs[1:]])) for name in runs[0]}
      for name, seconds in medians[steps, cfg].items():
        REPORT.add(Result("sampling", f"tiny {name} {steps} step(s) {'CFG w=3' if cfg else 'no CFG'}", seconds,
                          compile_s=runs[0][name] - seconds,
                          notes=f"SLat on {len(coords)} voxels" if name == "slat_flow" else ""))
  for name in ("ss_flow", "slat_flow"):
    REPORT.figure(f"sampling tiny {name}: 25 steps CFG / 1 step", medians[25, 3.0][name] / medians[1, 0.0][name],
                  f"25 steps no CFG / 1 step: {medians[25, 0.0][name] / medians[1, 0.0][name]:.1f}x")

  size = _SAMPLING_SS.value or ("M" if _QUICK.value else "L")
  model, params = _model(SS_CONFIGS, size)
  noise, _, c = _ss_inputs(model, size, 1)
  run = jit_sample(registry.velocity(model))
  flops = model_flops.ss_flow(model, COND_TOKENS[size])
  times = {}
  for steps, cfg in ((1, 0.0), (1, 3.0), (2, 3.0)):
    f = lambda p, x, c, steps=steps, cfg=cfg: run(p, x, c, steps=steps, rescale_t=3.0, cfg_strength=cfg)[0]
    times[steps, cfg] = measure(REPORT, "sampling", f"ss {size} {steps} step(s) {'CFG w=3' if cfg else 'no CFG'}", f,
                                params, noise, c, flops=steps * (2 if cfg else 1) * flops, repeats=repeats()).seconds
  per_step = times[2, 3.0] - times[1, 3.0]
  t25 = times[1, 3.0] + 24 * per_step
  REPORT.figure(f"sampling ss {size}: 25 steps CFG (extrapolated) / 1 step", t25 / times[1, 0.0],
                f"25-step CFG ~ {t25:.3g} s; target >= 45, limit 50")


def train_memory():
  """Per-device memory of the ss_flow_L / slat_flow_L train steps on 32 forced CPU devices (AOT compile,
  memory_analysis); a subprocess, since the device count is fixed when jax starts."""
  subprocess.run([sys.executable, str(_REPO / "launch/train_memory.py"), "--devices=32"], check=True)


SECTIONS = {"matmul": matmul, "attention": attention, "ss_forward": ss_forward, "slat_forward": slat_forward,
            "distill_step": distill_step, "sampling": sampling, "train_memory": train_memory}
ON_REQUEST = ("train_memory",)     # run only when named in --only (~16 minutes of AOT compilation)


def main(argv):
  del argv
  global REPORT
  apply_suite()
  unknown = sorted(set(_ONLY.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown --only section(s) {unknown}; known: {sorted(SECTIONS)}")
  names = _ONLY.value or [n for n in SECTIONS if n not in ON_REQUEST]
  REPORT = Report()
  REPORT.conditions.update(dtype=_DTYPE.value or "float32", suite=_SUITE.value, quick=_QUICK.value)
  print(f"{REPORT.conditions['summary']}; {len(jax.devices())} device(s)", flush=True)
  start = time.perf_counter()
  if names != ["train_memory"] and "matmul" not in names:
    names = ["matmul"] + names          # the yardstick of every fraction
  for name in names:
    print(f"== {name}", flush=True)
    SECTIONS[name]()
  if REPORT.gemm_flops_per_s:       # measured again at the end: fractions use the better of the two
    again = gemm_throughput(4096, compute_dtype())
    REPORT.figure(f"{_DTYPE.value or 'float32'} GEMM GFLOP/s at start / end", f"{REPORT.gemm_flops_per_s / 1e9:.0f} / {again / 1e9:.0f}",
                  "fractions use the larger")
    REPORT.gemm_flops_per_s = max(REPORT.gemm_flops_per_s, again)
  REPORT.figure("benchmark wall time s", round(time.perf_counter() - start, 1))
  print()
  print(REPORT.markdown())
  if _OUT.value:
    REPORT.write_json(_OUT.value)
    print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
