"""Speed benchmarks, measured side by side in one run, against this device's measured matmul rate
(launch/benchmark.py: its flags are the fields of ``Options``).

    report = run_benchmark(Options(fixtures=Path("tests/fixtures/trellis"), quick=True), ["matmul", "ss_forward"])

Sections (``Benchmark.sections()``): matmul (always run first: float32 GEMM, bfloat16 where the device has
it), attention (plain vs blocked at 4,096 tokens, forward and forward+backward, and the crossover),
ss_forward / slat_forward (forward and forward+backward of the SS and SLat flows), distill_step (one
AdamW training step of each objective, its network evaluations, and for VM+VD the evaluations timed
alone), sampling (1/2/4/25 steps with and without CFG, and the 25-step-CFG / 1-step ratios), decode (the
Gaussian decoder's forward) and render (one view and 4 views of a TRELLIS-sized Gaussian asset), both
through ``mdt_jax/bench/assets_bench.py``, trellis2 (TRELLIS.2's flows: mdt_jax/bench/trellis2_bench.py).
A caller may add sections of its own (launch/benchmark.py's train_memory runs in a subprocess).

Every measurement: compile time apart from run time, median run time over ``repeats`` calls of the
compiled executable, XLA's peak-memory plan, model FLOPs (analytic; formulas in
``mdt_jax/bench/flops.py``), achieved FLOP/s and the fraction of the measured GEMM rate.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conversion import trellis
from mdt_jax import numerics, stages
from mdt_jax.bench import assets_bench
from mdt_jax.bench import flops as model_flops
from mdt_jax.bench import objectives as obj
from mdt_jax.bench.gaussian_asset import sphere_shell_asset
from mdt_jax.bench.measure import Report, Result, gemm_throughput, measure
from mdt_jax.bench.trellis2_bench import Trellis2Section
from mdt_jax.flow import jit_sample
from mdt_jax.generation import StageSampling, TwoStagePipeline
from mdt_jax.models import registry
from mdt_jax.models.attention import Packing, attention as attention_op
from mdt_jax.sparse import SparseTensor, downsampling, neighbour_table
from mdt_jax.train.state import init_state
from mdt_jax.train.step import make_train_step

_SS_L_ARGS = dict(resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
                  num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=1, pe_mode="ape", qk_rms_norm=True,
                  use_fp16=True)
COND_TOKENS = {"tiny": 7, "M": 1374, "L": 1374}


def ss_configs(fixtures: Path) -> dict:
  """SS-flow configs by size; tiny is the fixture directory's ``ss_flow``."""
  return {
      "tiny": trellis.read_config(fixtures / "ss_flow"),
      # A narrow model at the real token and condition counts (--quick): width 384, 6 heads, 4 blocks.
      "M": {"name": "SparseStructureFlowModel", "args": dict(_SS_L_ARGS, model_channels=384, num_heads=6,
                                                             num_blocks=4, use_fp16=False)},
      # TRELLIS-image-large ss_flow_img_dit_L_16l8: 555 M params, 16^3 = 4,096 tokens.
      "L": {"name": "SparseStructureFlowModel", "args": _SS_L_ARGS},
  }


def slat_configs(fixtures: Path) -> dict:
  """SLat-flow configs by size; tiny has the widths of the fixture directory's ``slat_flow``."""
  return {
      # The fixture's widths (32 channels, 2 blocks, io stage of 16) on the real 64^3 grid.
      "tiny": {"name": "SLatFlowModel", "args": dict(
          trellis.read_config(fixtures / "slat_flow")["args"], resolution=64)},
      # TRELLIS-image-large slat_flow_img_dit_L_64l8p2: 600 M params.
      "L": {"name": "ElasticSLatFlowModel", "args": dict(
          resolution=64, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
          num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=2, num_io_res_blocks=2,
          io_block_channels=[128], pe_mode="ape", qk_rms_norm=True, use_fp16=True)},
  }


# TRELLIS-image-large's Gaussian decoder slat_dec_gs_swin8_B_64l8gs32_fp16 (85,369,024 params): its
# released config's fields; "tiny" (--quick) narrows it to width 64 and 2 blocks.
_GS_DECODER_L_ARGS = dict(
    resolution=64, model_channels=768, latent_channels=8, num_blocks=12, num_heads=12, mlp_ratio=4,
    attn_mode="swin", window_size=8, use_fp16=True,
    representation_config={"lr": {"_xyz": 1.0, "_features_dc": 1.0, "_opacity": 1.0, "_scaling": 1.0,
                                  "_rotation": 0.1},
                           "perturb_offset": True, "voxel_size": 1.5, "num_gaussians": 32,
                           "2d_filter_kernel_size": 0.1, "3d_filter_kernel_size": 0.0009, "scaling_bias": 0.004,
                           "opacity_bias": 0.1, "scaling_activation": "softplus"})
GS_DECODER_CONFIGS = {
    "tiny": {"name": "SLatGaussianDecoder", "args": dict(_GS_DECODER_L_ARGS, model_channels=64, num_blocks=2,
                                                         num_heads=2)},
    "L": {"name": "ElasticSLatGaussianDecoder", "args": _GS_DECODER_L_ARGS},
}
# (decoder size, voxels) of decode and (voxels, Gaussians per voxel, image size) of render, by --quick.
DECODE_SIZES = {False: ("L", 20_000), True: ("tiny", 2_000)}
RENDER_SIZES = {False: (20_000, 32, 512), True: (2_000, 8, 128)}


def _sum_of_squares(apply):
  """params -> d/dparams sum(out^2) (a forward+backward of the network)."""
  return lambda p, *a: jax.grad(lambda p: jnp.sum(jnp.square(apply(p, *a))))(p)


def _n_params(params):
  return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


SECTION_NAMES = ("matmul", "attention", "ss_forward", "slat_forward", "distill_step", "sampling", "decode", "render",
                 "trellis2")
# The GPU suite: option values used unless given explicitly, by (suite, quick).
SUITES = {
    ("gpu", False): dict(only=["attention", "ss_forward", "slat_forward", "distill_step", "sampling", "decode", "render",
                                "trellis2"],
                         dtype="bfloat16", ss_sizes=["L"], ss_batches=["1", "8"], slat_sizes=["L"],
                         slat_voxels=["5000", "20000", "32768"], slat_L_max_voxels=32768, slat_stream=0,
                         step_sizes=["ss:L", "slat:L"], objectives=["vm_vd"], sampling_ss_size="L"),
    ("gpu", True): dict(only=["attention", "ss_forward", "slat_forward", "distill_step", "sampling", "decode", "render",
                                "trellis2"],
                        dtype="bfloat16", ss_sizes=["tiny"], ss_batches=["1", "2"], slat_sizes=["tiny"],
                        slat_voxels=["2000"], slat_stream=0, step_sizes=["ss:tiny", "slat:tiny"],
                        objectives=["vm_vd"], sampling_ss_size="tiny"),
}


@dataclasses.dataclass(frozen=True)
class Options:
  """What to measure and at which sizes (launch/benchmark.py's flags, whose help says what each does;
  None: the section's default, which depends on ``quick``). fixtures: a TRELLIS fixture directory
  with ``ss_flow``, ``ss_dec`` and ``slat_flow`` (the tiny models and sampling checkpoints);
  trellis2_fixtures: TRELLIS.2's (the tiny flows and the full-size listing; None: ``trellis2`` beside
  ``fixtures``)."""
  fixtures: Path
  trellis2_fixtures: Path | None = None
  quick: bool = False
  repeats: int = 3
  dtype: str | None = None
  suite: str | None = None
  ss_sizes: list | None = None
  ss_batches: list = ("1",)
  slat_sizes: list | None = None
  slat_voxels: list | None = None
  slat_L_max_voxels: int = 20000
  slat_stream: int = 24
  step_sizes: list | None = None
  objectives: list | None = None
  sampling_ss_size: str | None = None


class Benchmark:
  """The sections, measured into ``report`` with ``options``; lines of progress go to ``log``."""

  def __init__(self, options: Options, report: Report, log=print):
    self.o, self.report, self.log = options, report, log
    self.ss_configs, self.slat_configs = ss_configs(options.fixtures), slat_configs(options.fixtures)

  def sections(self) -> dict:
    """Section name -> the method that measures it."""
    return {name: getattr(self, name) for name in SECTION_NAMES}

  def repeats(self):
    return 1 if self.o.quick else self.o.repeats

  def compute_dtype(self):
    return numerics.compute_dtype(self.o.dtype or "float32", field="--dtype")

  def _sizes(self, value, full, quick):
    return value if value is not None else (quick if self.o.quick else full)

  def matmul(self):
    """This device's float32 GEMM rate (full precision; 4096^3); bfloat16 where the device has bf16
    matmul units (not this CPU unless it reports avx512_bf16/amx) or ``--dtype`` asks for it. The
    yardstick of every fraction is the GEMM rate in ``--dtype``."""
    n = 4096
    rates = {"float32": gemm_throughput(n, np.float32)}
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if jax.default_backend() != "cpu" or "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags:
      rates["bfloat16"] = gemm_throughput(n, jnp.bfloat16)
    else:
      self.report.figure("bfloat16 GEMM units", "none", "this CPU has no bf16 matmul units (no avx512_bf16/amx)")
    dtype = self.o.dtype or "float32"
    if dtype not in rates:
      rates[dtype] = gemm_throughput(n, self.compute_dtype())
    for name, rate in rates.items():
      self.report.add(Result("matmul", f"{name} {n}^3 GEMM", 2 * n ** 3 / rate, flops=2 * n ** 3, notes="best of 5"))
    self.report.gemm_flops_per_s = rates[dtype]

  def _time_attention(self, case, q, k, v, impls, flops, both=True, **kwargs):
    """Forward (and forward+backward) of ``attention`` per implementation -> {(impl, kind): seconds}."""
    times = {}
    for impl in impls:
      f = lambda q, k, v, impl=impl: attention_op(q, k, v, implementation=impl, **kwargs)
      times[impl, "fwd"] = measure(self.report, "attention", f"{impl} {case} fwd", f, q, k, v, flops=flops,
                                   repeats=self.repeats()).seconds
      if both:
        g = jax.grad(lambda q, k, v: jnp.sum(jnp.square(f(q, k, v).astype(jnp.float32))), argnums=(0, 1, 2))
        times[impl, "fwd+bwd"] = measure(self.report, "attention", f"{impl} {case} fwd+bwd", g, q, k, v,
                                         flops=3 * flops, repeats=self.repeats()).seconds
    return times

  def _qkv(self, b, lq, lk, h=16, d=64, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(s), self.compute_dtype()) for s in ((b, lq, h, d), (b, lk, h, d), (b, lk, h, d)))

  def attention(self):
    """The one attention function at the SS flow's real sizes (batch 1, 16 heads of 64): self attention
    over 4,096 tokens and cross attention to 1,374 condition tokens, forward and forward+backward
    (FLOPs: 4 B H Lq Lk D forward, 3x that for forward+backward), plain XLA vs blocked; then the
    crossover of the two (2 x L tokens, 16 heads) that sets BLOCKED_FROM_SCORES; then segment ids (two
    samples of 2,500 tokens, the sparse layout) where the blocked path skips cross-sample blocks.
    With ``--suite``: :func:`attention_per_implementation` instead."""
    if self.o.suite:
      return self.attention_per_implementation()
    pair = lambda case, lq, lk, b=1: self._time_attention(case, *self._qkv(b, lq, lk), ("xla", "blocked"),
                                                          model_flops.attention(b, 16, lq, lk, 64))
    times = pair("self 4096", 4096, 4096)
    for kind in ("fwd", "fwd+bwd"):
      self.report.figure(f"attention 4096 {kind}: xla / blocked", times["xla", kind] / times["blocked", kind])
    pair("cross 4096x1374", 4096, 1374)
    crossover = [128, 512] if self.o.quick else [64, 128, 256, 512, 1024, 2048]
    for n in crossover:
      t = pair(f"self {n} (batch 2)", n, n, b=2)
      self.report.figure(f"attention {n} fwd+bwd: xla / blocked", t["xla", "fwd+bwd"] / t["blocked", "fwd+bwd"])
    if not self.o.quick:
      seg = jnp.asarray(np.repeat([0, 1], 2500).astype(np.int32))[None]
      self._time_attention("segments 2x2500", *self._qkv(1, 5000, 5000), ("xla", "blocked"),
                           2 * model_flops.attention(1, 16, 2500, 2500, 64), q_segment_ids=seg, kv_segment_ids=seg)

  def attention_per_implementation(self):
    """Every implementation that runs here, in --dtype, 16 heads of 64, forward and forward+backward:
    dense B=4 x L (L = 4,096; --quick 256) self attention, then the same 4 x L tokens packed into one
    sequence of 4 segments (equal, then unequal lengths: 0.25, 0.75, 1.25, 1.75 L), the sparse layout;
    the figure is packed / dense at equal total tokens (the variable-length cost)."""
    n = 256 if self.o.quick else 4096
    half = self.compute_dtype() != jnp.float32
    dense_impls = ["xla", "blocked"] + (["cudnn"] if half and jax.default_backend() == "gpu" else [])
    dense = self._time_attention(f"dense 4x{n}", *self._qkv(4, n, n), dense_impls, model_flops.attention(4, 16, n, n, 64))
    best_dense = {kind: min(t for (impl, k), t in dense.items() if k == kind) for kind in ("fwd", "fwd+bwd")}
    for label, lengths in (("equal", [n] * 4), ("unequal", [n // 4, 3 * n // 4, 5 * n // 4, 7 * n // 4])):
      seg = jnp.asarray(np.repeat(np.arange(4), lengths).astype(np.int32))[None]
      flops = sum(model_flops.attention(1, 16, m, m, 64) for m in lengths)
      packed = self._time_attention(f"packed 4 segments {label} ({sum(lengths)} tokens)", *self._qkv(1, sum(lengths), sum(lengths)),
                                    ["varlen", "blocked"], flops, q_segment_ids=seg, kv_segment_ids=seg,
                                    packing=Packing(4, max(lengths), max(lengths)))
      for kind in ("fwd", "fwd+bwd"):
        self.report.figure(f"attention packed {label} / best dense, {kind}", packed["varlen", kind] / best_dense[kind],
                           f"varlen {packed['varlen', kind] * 1e3:.3g} ms vs dense {best_dense[kind] * 1e3:.3g} ms; "
                           f"target <= 1.5 on GPU")

  def ss_forward(self):
    """SS flow forward and forward+backward (d/dparams of sum(v^2)) at each of ``--ss_batches``, compute
    in --dtype, at the configured sizes (M: the real token counts at width 384; L: the full 555 M-param
    config)."""
    for size in self._sizes(self.o.ss_sizes, ["tiny", "L"], ["tiny", "M"]):
      model, params = self._model(self.ss_configs, size)
      fwd = registry.velocity(model)
      tokens = (model.resolution // model.patch_size) ** 3
      note = f"{_n_params(params) / 1e6:.1f} M params, {tokens} tokens, {COND_TOKENS[size]} cond tokens"
      for batch in map(int, self.o.ss_batches):
        x, t, cond = _ss_inputs(model, size, batch)
        flops = batch * model_flops.ss_flow(model, COND_TOKENS[size])
        case = size if batch == 1 else f"{size} B={batch}"
        measure(self.report, "ss_forward", f"{case} fwd", fwd, params, x, t, cond, flops=flops, repeats=self.repeats(), notes=note)
        r = measure(self.report, "ss_forward", f"{case} fwd+bwd", _sum_of_squares(fwd), params, x, t, cond,
                    flops=3 * flops, repeats=self.repeats())
        # Past the available memory: rematerialised blocks (XLA:CPU's plan barely shrinks with them), then
        # half the blocks (the same per-block work, so the same utilisation; FLOPs of the half model).
        variants = [("remat blocks", {"use_checkpoint": True}),
                    (f"{model.num_blocks // 2} of {model.num_blocks} blocks", {"num_blocks": model.num_blocks // 2})]
        while r.notes == "not run (memory)" and variants:
          label, overrides = variants.pop(0)
          other, other_params = self._model(self.ss_configs, size, **overrides)
          r = measure(self.report, "ss_forward", f"{case} fwd+bwd ({label})", _sum_of_squares(registry.velocity(other)), other_params, x, t, cond,
                      flops=3 * batch * model_flops.ss_flow(other, COND_TOKENS[size]), repeats=self.repeats(),
                      notes="model FLOPs 3x forward (a recomputed forward not counted)")
          del other_params
      del params

  def slat_forward(self):
    """SLat flow forward and forward+backward (batch 1, compute in --dtype) on a 64^3 sample with N active
    voxels (a sphere shell), and the neighbour-table + down-sampling share; then the number of
    compilations over a stream of batches of varying sizes (capacities from ``bucket_capacity``)."""
    for size in self._sizes(self.o.slat_sizes, ["tiny", "L"], ["tiny"]):
      model, params = self._model(self.slat_configs, size)
      velocity = registry.velocity(model)
      fwd = lambda p, x, t, c: velocity(p, x, t, c).feats
      structure = lambda x: (
          neighbour_table(x.coords, x.mask, resolution=64, batch_size=1),
          downsampling(x.coords, x.mask, resolution=64, batch_size=1, capacity=x.coarse_capacities[0]))
      t = jnp.asarray([0.5], jnp.float32)
      for n in map(int, self._sizes(self.o.slat_voxels, ["5000", "20000"], ["5000"])):
        if size == "L" and n > self.o.slat_L_max_voxels:
          self.log(f"  slat_forward[{size}, {n} voxels]: skipped (--slat_L_max_voxels={self.o.slat_L_max_voxels})")
          continue
        x, cond, flops, tokens = _slat_batch(model, [n])
        lookup = measure(self.report, "slat_forward", f"{size} {n} voxels: neighbour tables + down-sampling", structure, x,
                         repeats=self.repeats()).seconds
        note = (f"{_n_params(params) / 1e6:.1f} M params, {n} voxels -> {tokens[0]} tokens, capacities "
                f"{x.capacity}/{x.coarse_capacities}, of which structure {lookup * 1e3:.0f} ms")
        measure(self.report, "slat_forward", f"{size} {n} voxels fwd", fwd, params, x, t, cond, flops=flops,
                repeats=self.repeats(), notes=note)
        measure(self.report, "slat_forward", f"{size} {n} voxels fwd+bwd", _sum_of_squares(fwd), params, x, t, cond,
                flops=3 * flops, repeats=self.repeats())
      del params
    if self.o.slat_stream and not self.o.quick:
      self._slat_compile_stream()

  def _slat_compile_stream(self):
    """Batches of 2 instances of 1k-4k voxels each: compilations of one jitted forward, and how many
    distinct (capacity, coarse capacity) programs a long stream of such batches would need."""
    model, params = self._model(self.slat_configs, "tiny")
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
    for _ in range(self.o.slat_stream):
      x = batch()
      sizes.add(int(x.mask.sum()))
      jax.block_until_ready(forward(params, x, t, cond))
    elapsed = time.perf_counter() - start
    signatures = {(x.capacity, x.coarse_capacities) for x in (batch() for _ in range(500))}
    self.report.figure("slat compile count", forward._cache_size(),
                       f"{self.o.slat_stream} batches of 2 x 1k-4k voxels ({len(sizes)} distinct totals) in {elapsed:.0f} s; "
                       f"500 more fall into {len(signatures)} (capacity, coarse capacity) programs")

  def distill_step(self):
    """One training step, built as training builds it (mdt_jax.train.step: loss and gradient of the
    objective, AdamW update, the non-finite guard; the state carried and donated as a training loop
    does) of each objective, for each model; its network evaluations (from the code,
    see mdt_jax.bench.objectives) and model FLOPs (their sum). For VM+VD the distinct evaluations are
    also timed alone, and the step is compared with their sum (target: step <= sum)."""
    default = ["ss:tiny", "slat:tiny", "ss:M", "ss:L", "slat:L"]
    for spec in self._sizes(self.o.step_sizes, default, ["ss:tiny", "slat:tiny"]):
      kind, size = spec.split(":")
      big = size != "tiny"
      if not stages.get(kind, field=f"--step_sizes entry {spec!r}").sparse:
        model, params = self._model(self.ss_configs, size)
        batch_size = 1 if big else 4
        x0, _, cond = _ss_inputs(model, size, batch_size)
        flops_sample = model_flops.ss_flow(model, COND_TOKENS[size])
        student = registry.build_model({"name": self.ss_configs[size]["name"],
                                        "args": {**self.ss_configs[size]["args"], "use_checkpoint": size == "L"}},
                                       dtype=self.compute_dtype())
      else:
        model, params = self._model(self.slat_configs, size)
        voxels = [5000] if big else [2000, 2000]
        batch_size = len(voxels)
        x0, cond, flops_all, _ = _slat_batch(model, voxels)
        flops_sample = flops_all / batch_size
        student = model
      apply, teacher_apply = registry.velocity(student), registry.velocity(model)
      batch = {"x0": x0, "cond": cond}
      objectives = self.o.objectives or (["vm_vd"] if self.o.quick and spec != "ss:tiny" else list(obj.OBJECTIVES))
      for name in objectives:
        config = obj.config_for(name)
        evals = obj.network_evaluations(config, apply, teacher_apply, params, params, batch)
        flops = sum(obj.COST[e.kind] * e.samples * flops_sample for e in evals)
        optimizer = optax.adamw(1e-4, weight_decay=0.0)
        step = make_train_step(config, optimizer, student_apply=apply, teacher_apply=teacher_apply, sparse=False)
        state = init_state(jax.tree.map(jnp.copy, params), optimizer, config.ema_rates, seed=0)
        frozen = {"teacher": params, "image_encoder": {}}
        micro_batches = jax.tree.map(lambda a: a[None], batch)     # one micro-batch
        result = measure(self.report, "distill_step", f"{kind} {size} {name}", step, state, frozen, micro_batches,
                         flops=flops, repeats=self.repeats(), carry=1, donate_argnums=(0,),
                         notes=f"batch {batch_size}; {obj.describe(evals, batch_size)}")
        self.report.figure(f"network evaluations per step [{kind} {size} {name}]", f"{len(evals)} forward passes, "
                           f"{sum(e.samples for e in evals) // batch_size} evaluations of the batch, of which "
                           f"{sum(e.samples for e in evals if e.kind != 'fwd') // batch_size} differentiated")
        if name == "vm_vd":
          total = total_cpu = 0.0
          for e in sorted(set(evals), key=lambda e: (e.network, e.kind, e.samples)):
            fn = obj.evaluation_fn(apply if e.network == "student" else teacher_apply, e.kind)
            xs = obj.evaluation_inputs(x0, cond, e.samples)
            r = measure(self.report, "distill_step", f"{kind} {size} vm_vd: {e.network} {e.kind} x{e.samples // batch_size}",
                        fn, params, *xs, flops=obj.COST[e.kind] * e.samples * flops_sample, repeats=self.repeats())
            total += r.seconds * evals.count(e)
            total_cpu += r.cpu_s * evals.count(e)
          self.report.figure(f"{kind} {size} vm_vd step / sum of its evaluations", result.seconds / total,
                             f"wall: step {result.seconds:.3g} s, evaluations {total:.3g} s; CPU time ratio "
                             f"{result.cpu_s / total_cpu:.2f}; target <= 1")
        del state
      del params

  def sampling(self):
    """Two-stage generation with the tiny fixture checkpoints (batch 1, --dtype), per stage: the SS-flow
    sampler, the SS decoder, the SLat-flow sampler on the decoded voxels, each sampler at 1, 2, 4 and
    25 steps (--quick: 1 and 25) without and with CFG (w = 3 on every step, rescale_t 3, one batched forward of 2 per step);
    the 25-step-CFG / 1-step ratios. Then the SS flow at the real token count (L; --quick: M): the
    1-step sampler timed, and 25 steps with CFG extrapolated from the timed 1- and 2-step CFG samplers
    (t25 = t1 + 24 (t2 - t1)). Samplers are jitted with the params as an argument."""
    fixtures = self.o.fixtures
    pipe = TwoStagePipeline.from_checkpoints(fixtures / "ss_flow", fixtures / "ss_dec", fixtures / "slat_flow",
                                             slat_mean=np.zeros(8), slat_std=np.ones(8), dtype=self.compute_dtype())
    cond = np.random.default_rng(0).standard_normal((1, COND_TOKENS["tiny"], pipe.ss_flow.cond_channels), np.float32)
    key = jax.random.key(0)
    coords = np.argwhere(pipe.structure(cond, key, StageSampling(1))[1]).astype(np.int32)
    medians = {}
    step_counts = (1, 25) if self.o.quick else (1, 2, 4, 25)
    for steps in step_counts:
      for cfg in (0.0, 3.0):
        settings = StageSampling(steps, cfg, (0.0, 1.0), 3.0)
        runs = []
        for _ in range(1 + max(self.repeats(), 3)):  # the first run compiles
          runs.append({})
          pipe.structure(cond, key, settings, timings=runs[-1])
          pipe.latents(coords, cond, key, settings, timings=runs[-1])
        medians[steps, cfg] = {name: float(np.median([r[name] for r in runs[1:]])) for name in runs[0]}
        for name, seconds in medians[steps, cfg].items():
          self.report.add(Result("sampling", f"tiny {name} {steps} step(s) {'CFG w=3' if cfg else 'no CFG'}", seconds,
                                 compile_s=runs[0][name] - seconds,
                                 notes=f"SLat on {len(coords)} voxels" if name == "slat_flow" else ""))
    for name in ("ss_flow", "slat_flow"):
      self.report.figure(f"sampling tiny {name}: 25 steps CFG / 1 step", medians[25, 3.0][name] / medians[1, 0.0][name],
                         f"25 steps no CFG / 1 step: {medians[25, 0.0][name] / medians[1, 0.0][name]:.1f}x")

    size = self.o.sampling_ss_size or ("M" if self.o.quick else "L")
    model, params = self._model(self.ss_configs, size)
    noise, _, c = _ss_inputs(model, size, 1)
    run = jit_sample(registry.velocity(model))
    flops = model_flops.ss_flow(model, COND_TOKENS[size])
    times = {}
    for steps, cfg in ((1, 0.0), (1, 3.0), (2, 3.0)):
      f = lambda p, x, c, steps=steps, cfg=cfg: run(p, x, c, steps=steps, rescale_t=3.0, cfg_strength=cfg)[0]
      times[steps, cfg] = measure(self.report, "sampling", f"ss {size} {steps} step(s) {'CFG w=3' if cfg else 'no CFG'}", f,
                                  params, noise, c, flops=steps * (2 if cfg else 1) * flops, repeats=self.repeats()).seconds
    per_step = times[2, 3.0] - times[1, 3.0]
    t25 = times[1, 3.0] + 24 * per_step
    self.report.figure(f"sampling ss {size}: 25 steps CFG (extrapolated) / 1 step", t25 / times[1, 0.0],
                       f"25-step CFG ~ {t25:.3g} s; target >= 45, limit 50")

  def decode(self):
    """The Gaussian decoder's forward (the network output, not the representation) on one sample of
    shell voxels with N(0, 1) latents: the released decoder's config at 20,000 voxels of 64^3 (--quick:
    width 64, 2 blocks, at 2,000 voxels), in --dtype."""
    size, voxels = DECODE_SIZES[self.o.quick]
    model, params = self._model(GS_DECODER_CONFIGS, size)
    assets_bench.decode_section(self.report, model, params, num_voxels=voxels, repeats=self.repeats())

  def render(self):
    """A TRELLIS-sized Gaussian asset (32 Gaussians on each of 20,000 voxels of a sphere shell in 64^3 =
    640,000) rendered at 512 x 512 from one of TRELLIS's orbit views, then from all 4 in one call
    (--quick: 8 Gaussians on each of 2,000 voxels, 128 x 128)."""
    voxels, per_voxel, resolution = RENDER_SIZES[self.o.quick]
    assets_bench.render_section(self.report, sphere_shell_asset(voxels, per_voxel), resolution=resolution,
                                view_counts=(1, 4), repeats=self.repeats())

  def trellis2(self):
    """TRELLIS.2's flows (mdt_jax/bench/trellis2_bench.py): the SS flow forward at 4,096 tokens, the shape
    flow forward and forward+backward at 8,192 and 32,768 tokens, the shape stage's 12 guided steps
    against 1, a VM+VD step of each stage (--quick: the tiny fixture configs)."""
    Trellis2Section(self, self.o.trellis2_fixtures or Path(self.o.fixtures).parent / "trellis2").run()

  def _model(self, configs, size, **overrides):
    config = {"name": configs[size]["name"], "args": {**configs[size]["args"], **overrides}}
    model = registry.build_model(config, dtype=self.compute_dtype())
    params = jax.jit(lambda key: registry.init_params(model, key))(jax.random.key(0))
    return model, params


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


def run_benchmark(options: Options, names: list[str], extra_sections: dict | None = None, log=print) -> Report:
  """Runs the sections ``names`` in order (matmul first unless the only one is an extra section), each
  an entry of ``Benchmark.sections()`` or of ``extra_sections`` ({name: callable()}); then measures the
  GEMM rate again (fractions use the better of the two) and the wall time. -> the Report."""
  report = Report()
  report.conditions.update(dtype=options.dtype or "float32", suite=options.suite, quick=options.quick)
  log(f"{report.conditions['summary']}; {len(jax.devices())} device(s)")
  bench = Benchmark(options, report, log)
  sections = {**bench.sections(), **(extra_sections or {})}
  start = time.perf_counter()
  if "matmul" not in names and not all(name in (extra_sections or {}) for name in names):
    names = ["matmul"] + names          # the yardstick of every fraction
  for name in names:
    log(f"== {name}")
    sections[name]()
  if report.gemm_flops_per_s:       # measured again at the end: fractions use the better of the two
    again = gemm_throughput(4096, bench.compute_dtype())
    report.figure(f"{options.dtype or 'float32'} GEMM GFLOP/s at start / end", f"{report.gemm_flops_per_s / 1e9:.0f} / {again / 1e9:.0f}",
                  "fractions use the larger")
    report.gemm_flops_per_s = max(report.gemm_flops_per_s, again)
  report.figure("benchmark wall time s", round(time.perf_counter() - start, 1))
  return report
