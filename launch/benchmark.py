"""Speed benchmarks, measured side by side in one run, against this device's measured matmul rate.

    python launch/benchmark.py --quick --out=/tmp/bench.json     # < 5 minutes on 2 CPU cores
    python launch/benchmark.py                                   # every section at the real sizes
    python launch/benchmark.py --only=attention,ss_forward --ss_sizes=tiny,L
    python launch/benchmark.py --only=slat_forward --slat_sizes=tiny,L --slat_voxels=5000,20000
    python launch/benchmark.py --only=ss_forward,distill_step --ss_sizes=L --step_sizes=ss:L --dtype=bfloat16
    python launch/benchmark.py --only=decode,render              # the 3D-asset path at TRELLIS's sizes

Sections (``--only``): matmul (always run first: float32 GEMM, bfloat16 where the device has it),
attention (plain vs blocked at 4,096 tokens, forward and forward+backward, and the crossover),
ss_forward / slat_forward (forward and forward+backward of the SS and SLat flows), distill_step (one
AdamW training step of each objective, its network evaluations, and for VM+VD the evaluations timed
alone), sampling (1/2/4/25 steps with and without CFG, and the 25-step-CFG / 1-step ratios),
decode (TRELLIS's Gaussian decoder forward at 20,000 voxels), render (one 512x512 view and 4 views of a
640,000-Gaussian asset),
trellis2 (TRELLIS.2's 1.3B flows: SS forward at 4,096 tokens, shape forward and forward+backward at
8,192 / 32,768 tokens, 12 guided shape steps against 1, a VM+VD step of each stage; --quick: tiny),
train_memory (AOT per-device memory of the L train steps on 32 forced devices; only when named).

Every measurement: compile time apart from run time, median run time over ``--repeats`` calls of the
compiled executable, XLA's peak-memory plan, model FLOPs (analytic; formulas in
``mdt_jax/bench/flops.py``), achieved FLOP/s and the fraction of the measured GEMM rate. A markdown
table goes to stdout at the end; ``--out FILE.json`` writes every figure.
"""
import subprocess
import sys
from pathlib import Path

from absl import app, flags

from mdt_jax import cli, numerics
from mdt_jax.bench.suite import SECTION_NAMES, SUITES, Options, run_benchmark

_ONLY = flags.DEFINE_list("only", [], "Sections to run (default: all).")
_QUICK = flags.DEFINE_bool("quick", False, "Small sizes and one timed call each: under 5 minutes on 2 CPU cores.")
_OUT = flags.DEFINE_string("out", None, "Write every figure to this JSON file.")
_SUITE = flags.DEFINE_enum("suite", None, ["gpu"], "A preset of sections and sizes (flags given explicitly win): "
                           "gpu = bf16 SS L at B=1,8, SLat L at 5k/20k/32,768 voxels, VM+VD steps of both stages, "
                           "sampling, decode and render, attention per implementation (under 8 minutes on one "
                           "H100/H200), TRELLIS.2's flows (not yet timed on a GPU); with --quick, the same sections at tiny sizes (CPU, CI).")
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
ON_REQUEST = ("train_memory",)     # run only when named in --only (~16 minutes of AOT compilation)
OPTION_FLAGS = ("quick", "repeats", "dtype", "suite", "ss_sizes", "ss_batches", "slat_sizes", "slat_voxels",
                "slat_L_max_voxels", "slat_stream", "step_sizes", "objectives", "sampling_ss_size")


def apply_suite():
  """Sets the flags of ``--suite`` (with ``--quick``: its tiny variant) that were not given."""
  if not _SUITE.value:
    return
  for name, value in SUITES[_SUITE.value, _QUICK.value].items():
    if not flags.FLAGS[name].present:
      flags.FLAGS[name].value = value


def train_memory():
  """Per-device memory of the ss_flow_L / slat_flow_L train steps on 32 forced CPU devices (AOT compile,
  memory_analysis); a subprocess, since the device count is fixed when jax starts."""
  subprocess.run([sys.executable, str(_REPO / "launch/train_memory.py"), "--devices=32"], check=True)


def main(argv):
  del argv
  apply_suite()
  known = SECTION_NAMES + ON_REQUEST
  unknown = sorted(set(_ONLY.value) - set(known))
  if unknown:
    raise app.UsageError(f"unknown --only section(s) {unknown}; known: {sorted(known)}")
  names = _ONLY.value or [n for n in known if n not in ON_REQUEST]
  options = Options(fixtures=_REPO / "tests/fixtures/trellis", **{name: flags.FLAGS[name].value for name in OPTION_FLAGS})
  report = run_benchmark(options, names, extra_sections={"train_memory": train_memory},
                         log=lambda line: print(line, flush=True))
  print()
  print(report.markdown())
  if _OUT.value:
    report.write_json(_OUT.value)
    print(f"\nwrote {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
