"""Speed benchmarks, measured side by side in one run.

    python launch/benchmark.py                      # every section
    python launch/benchmark.py --only=ss_forward --ss_sizes=tiny,L
    python launch/benchmark.py --only=slat_forward --slat_sizes=tiny,L --slat_voxels=5000,20000,40000

Each section prints one line per measurement: median wall time of ``--repeats`` compiled calls
(after one warm-up call that compiles), and derived figures.
"""
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from conversion import trellis  # noqa: E402

_ONLY = flags.DEFINE_list("only", [], "Sections to run (default: all).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed calls per measurement (median reported).")
_SS_SIZES = flags.DEFINE_list("ss_sizes", ["tiny", "L"], "SS-flow configs for ss_forward: tiny, L.")
_SLAT_SIZES = flags.DEFINE_list("slat_sizes", ["tiny", "L"], "SLat-flow configs for slat_forward: tiny, L.")
_SLAT_VOXELS = flags.DEFINE_list("slat_voxels", ["5000", "20000", "40000"],
                                 "Active voxels of the one 64^3 sample timed by slat_forward.")
_SLAT_L_MAX = flags.DEFINE_integer("slat_L_max_voxels", 5000, "Largest voxel count run with the L config "
                                   "(its float32 params alone take 2.4 GB of CPU memory).")
_SLAT_STREAM = flags.DEFINE_integer("slat_stream", 24, "Batches in slat_forward's compile-count stream.")

_REPO = Path(__file__).resolve().parents[1]
SS_CONFIGS = {
    "tiny": trellis.read_config(_REPO / "tests/fixtures/trellis/ss_flow"),
    # TRELLIS-image-large ss_flow_img_dit_L_16l8: 555 M params, 16^3 = 4,096 tokens.
    "L": {"name": "SparseStructureFlowModel", "args": dict(
        resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024,
        num_blocks=24, num_heads=16, mlp_ratio=4, patch_size=1, pe_mode="ape", qk_rms_norm=True,
        use_fp16=True)},
}
COND_TOKENS = {"tiny": 7, "L": 1374}
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


def time_call(fn, *args, repeats=None):
  """-> (compile+first-call seconds, median seconds of the following calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats or _REPEATS.value):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return first, float(np.median(times))


def ss_forward():
  """Forward pass of the SS flow (batch 1, float32 compute) at the configured sizes."""
  for size in _SS_SIZES.value:
    model = trellis.build_model(SS_CONFIGS[size])
    r, c = model.resolution, model.cond_channels
    params = jax.jit(lambda key: trellis.init_params(model, key))(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, r, r, r, model.in_channels), np.float32))
    t = jnp.asarray([0.5], jnp.float32)
    cond = jnp.asarray(rng.standard_normal((1, COND_TOKENS[size], c), np.float32))
    forward = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
    flops = forward.lower(params, x, t, cond).compile().cost_analysis().get("flops", float("nan"))
    first, median = time_call(forward, params, x, t, cond)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    print(f"ss_forward[{size}]: {n_params / 1e6:.1f} M params, {(r // model.patch_size) ** 3} tokens, "
          f"{flops / 1e9:.1f} GFLOP: {median * 1e3:.1f} ms/forward (first call incl. compile {first:.1f} s), "
          f"{flops / median / 1e9:.0f} GFLOP/s")
    del params


def sampling():
  """Two-stage generation with the tiny fixture checkpoints (batch 1, float32), per stage: the SS-flow
  sampler, the SS decoder, the SLat-flow sampler on the decoded voxels, each sampler at 1, 2 and 25
  steps without and with CFG (w = 3 on every step, rescale_t 3, one batched forward of 2 per step);
  and the 25-step-CFG / 1-step ratios. Samplers are jitted with the params as an argument (one
  compilation per setting); the timed calls are TwoStagePipeline's stage functions."""
  from mdt_jax.generation import StageSampling, TwoStagePipeline
  fixtures = _REPO / "tests/fixtures/trellis"
  pipe = TwoStagePipeline.from_checkpoints(fixtures / "ss_flow", fixtures / "ss_dec", fixtures / "slat_flow",
                                           slat_mean=np.zeros(8), slat_std=np.ones(8))
  cond = np.random.default_rng(0).standard_normal((1, COND_TOKENS["tiny"], pipe.ss_flow.cond_channels), np.float32)
  key = jax.random.key(0)
  coords = np.argwhere(pipe.structure(cond, key, StageSampling(1))[1]).astype(np.int32)
  medians = {}
  for steps in (1, 2, 25):
    for cfg in (0.0, 3.0):
      settings = StageSampling(steps, cfg, (0.0, 1.0), 3.0)
      runs = []
      for _ in range(1 + _REPEATS.value):  # the first run compiles
        runs.append({})
        pipe.structure(cond, key, settings, timings=runs[-1])
        pipe.latents(coords, cond, key, settings, timings=runs[-1])
      medians[steps, cfg] = {name: float(np.median([r[name] for r in runs[1:]])) for name in runs[0]}
      stages = ", ".join(f"{name} {seconds * 1e3:.1f} ms (first {runs[0][name]:.1f} s)"
                         for name, seconds in medians[steps, cfg].items())
      print(f"sampling[tiny, {steps} step(s), {'CFG w=3' if cfg else 'no CFG'}]: {stages}; "
            f"SS 8^3 -> 16^3, SLat on {len(coords)} voxels")
  for name in ("ss_flow", "slat_flow"):
    print(f"sampling[{name}]: 25 steps with CFG / 1 step without = "
          f"{medians[25, 3.0][name] / medians[1, 0.0][name]:.1f}x (25 steps without CFG / 1 step: "
          f"{medians[25, 0.0][name] / medians[1, 0.0][name]:.1f}x)")
  total = {k: sum(v.values()) for k, v in medians.items()}
  print(f"sampling[both stages]: 25 steps with CFG / 1 step without = {total[25, 3.0] / total[1, 0.0]:.1f}x")


_GRID = np.stack(np.meshgrid(*[np.arange(64)] * 3, indexing="ij"), -1).reshape(-1, 3)  # row-major 64^3
_CENTRE_DIST = np.linalg.norm(_GRID - 31.5, axis=1)


def _shell_voxels(n, radius=0.375, batch_index=0):
  """The n voxels of a 64^3 grid nearest a sphere of ``radius * 64`` (a surface-like SLat structure;
  the shell thickens with n) -> packed coords [n, 4] int32, lexicographic."""
  rows = np.sort(np.argpartition(np.abs(_CENTRE_DIST - radius * 64), n)[:n])
  return np.concatenate([np.full((n, 1), batch_index), _GRID[rows]], 1).astype(np.int32)


def slat_forward():
  """SLat flow forward (batch 1, float32 compute) on a 64^3 sample with N active voxels: time, the
  neighbour-table + down-sampling share, XLA's buffer sizes (its peak-memory plan: temporaries, and
  the params + inputs + outputs) and the process's peak RSS; then the number of compilations over a
  stream of batches of varying sizes (capacities from ``bucket_capacity``)."""
  from mdt_jax.sparse import SparseTensor, downsampling, neighbour_table
  rng = np.random.default_rng(0)
  for size in _SLAT_SIZES.value:
    model = trellis.build_model(SLAT_CONFIGS[size])
    params = jax.jit(lambda key: trellis.init_params(model, key))(jax.random.key(0))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    forward = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
    structure = jax.jit(lambda x: (
        neighbour_table(x.coords, x.mask, resolution=64, batch_size=1),
        downsampling(x.coords, x.mask, resolution=64, batch_size=1, capacity=x.coarse_capacities[0])))
    t = jnp.asarray([0.5], jnp.float32)
    cond = jnp.asarray(rng.standard_normal((1, COND_TOKENS[size], model.cond_channels), np.float32))
    for n in map(int, _SLAT_VOXELS.value):
      if size == "L" and n > _SLAT_L_MAX.value:
        print(f"slat_forward[{size}, {n} voxels]: skipped (--slat_L_max_voxels={_SLAT_L_MAX.value})")
        continue
      coords = _shell_voxels(n)
      x = SparseTensor.from_packed(coords, rng.standard_normal((n, model.in_channels)).astype(np.float32),
                                   coarse_levels=1)
      start = time.perf_counter()
      compiled = forward.lower(params, x, t, cond).compile()
      compile_s = time.perf_counter() - start
      mem = compiled.memory_analysis()
      _, median = time_call(compiled, params, x, t, cond)
      _, lookup = time_call(structure, x)
      parents = len(np.unique(coords[:, 1:] // 2, axis=0))
      print(f"slat_forward[{size}, {n_params / 1e6:.2f} M params, {n} voxels -> {parents} parents; capacities "
            f"{x.capacity}/{x.coarse_capacities[0]}]: {median * 1e3:.0f} ms/forward (compile {compile_s:.1f} s), "
            f"of which neighbour tables + down-sampling {lookup * 1e3:.0f} ms alone; XLA buffers "
            f"{mem.temp_size_in_bytes / 2 ** 20:.0f} MiB temporaries + "
            f"{(mem.argument_size_in_bytes + mem.output_size_in_bytes) / 2 ** 20:.0f} MiB params/inputs/outputs; "
            f"process peak RSS so far {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.1f} GiB")
    del params
  _slat_compile_stream()


def _slat_compile_stream():
  """Batches of 2 instances of 1k-4k voxels each: compilations of one jitted forward, and how many
  distinct (capacity, coarse capacity) programs a long stream of such batches would need."""
  from mdt_jax.sparse import SparseTensor
  model = trellis.build_model(SLAT_CONFIGS["tiny"])
  params = jax.jit(lambda key: trellis.init_params(model, key))(jax.random.key(0))
  forward = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
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
  print(f"slat_forward[compile count]: {_SLAT_STREAM.value} batches of 2 x 1k-4k voxels "
        f"({len(sizes)} distinct voxel totals) compiled {forward._cache_size()} programs in {elapsed:.0f} s; "
        f"500 more such batches fall into {len(signatures)} (capacity, coarse capacity) programs")


def distill_step():
  """One jitted loss+gradient step of each objective against flow matching, tiny SS config, batch 4."""
  from mdt_jax.distill import loss_and_grad_fn, objective_config
  teacher, teacher_params = trellis.load_checkpoint(_REPO / "tests/fixtures/trellis/ss_flow")
  _, student_params = trellis.load_checkpoint(_REPO / "tests/fixtures/trellis/mdt_student")
  apply = lambda p, x, t, c: teacher.apply({"params": p}, x, t, c)
  rng = np.random.default_rng(0)
  x, _, _ = teacher.example_inputs(batch_size=4)
  batch = {"x0": jnp.asarray(rng.standard_normal(x.shape, np.float32)),
           "cond": jnp.asarray(rng.standard_normal((4, COND_TOKENS["tiny"], teacher.cond_channels), np.float32))}
  times = {}
  for name, fields in [("fm", dict(objective="fm")), ("vm_vd discrete", dict(objective="vm_vd")),
                       ("vm_vd continuous", dict(objective="vm_vd", distill_type="continuous")),
                       ("cm", dict(objective="cm"))]:
    step = loss_and_grad_fn(student_apply=apply, teacher_apply=apply, config=objective_config(**fields))
    first, times[name] = time_call(step, student_params, teacher_params, batch, jax.random.key(0))
    print(f"distill_step[{name}]: {times[name] * 1e3:.1f} ms/step (compile+first {first:.1f} s), "
          f"{times[name] / times['fm']:.2f}x a flow-matching step")


def train_memory():
  """Per-device memory of the ss_flow_L / slat_flow_L train steps on 32 forced CPU devices (AOT compile,
  memory_analysis); a subprocess, since the device count is fixed when jax starts."""
  subprocess.run([sys.executable, str(_REPO / "launch/train_memory.py"), "--devices=32"], check=True)


SECTIONS = {"ss_forward": ss_forward, "sampling": sampling, "slat_forward": slat_forward,
            "distill_step": distill_step, "train_memory": train_memory}


def main(argv):
  del argv
  unknown = sorted(set(_ONLY.value) - set(SECTIONS))
  if unknown:
    raise app.UsageError(f"unknown --only section(s) {unknown}; known: {sorted(SECTIONS)}")
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} ({len(jax.devices())} device(s))")
  for name in _ONLY.value or SECTIONS:
    SECTIONS[name]()


if __name__ == "__main__":
  app.run(main)
