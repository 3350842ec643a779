"""Timing, memory and FLOP bookkeeping for ``launch/benchmark.py``.

Every figure is a :class:`Result` in one :class:`Report`: compile time apart from run time (AOT
``lower().compile()``, then calls of the compiled executable), the median run time, XLA's peak-memory
plan of the executable, the model FLOPs of one call (analytic, see ``mdt_jax.bench.flops``) and the
fraction of this device's measured matmul throughput they reach.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import time
from typing import Any, Callable, Optional

import jax
import numpy as np


@dataclasses.dataclass
class Result:
  section: str
  case: str
  seconds: float                       # median wall time of one call (run only)
  compile_s: Optional[float] = None
  flops: Optional[float] = None        # model FLOPs of one call
  memory_bytes: Optional[int] = None   # XLA's plan: temporaries + arguments + outputs - aliased
  notes: str = ""
  cpu_s: Optional[float] = None        # median process CPU seconds of one call (all threads)
  extra: dict = dataclasses.field(default_factory=dict)


class Report:
  """All results of one run, the device's peak matmul rate, and the run's conditions."""

  def __init__(self):
    self.results: list[Result] = []
    self.gemm_flops_per_s: Optional[float] = None
    self.figures: dict[str, Any] = {}          # named scalars (ratios, targets)
    self.conditions = conditions()

  def add(self, result: Result) -> Result:
    self.results.append(result)
    print(f"  {result.section}[{result.case}]: {_fmt_s(result.seconds)}"
          + (f" (CPU {_fmt_s(result.cpu_s)})" if result.cpu_s is not None else "")
          + (f", compile {result.compile_s:.1f} s" if result.compile_s is not None else "")
          + (f", {result.flops / 1e9:.1f} GFLOP, {result.flops / result.seconds / 1e9:.1f} GFLOP/s"
             if result.flops else "")
          + (f" ({self.fraction(result):.0%} of GEMM)" if self.fraction(result) is not None else "")
          + (f", peak {result.memory_bytes / 2 ** 20:.0f} MiB" if result.memory_bytes else "")
          + (f"; {result.notes}" if result.notes else ""), flush=True)
    return result

  def figure(self, name: str, value, note: str = ""):
    self.figures[name] = {"value": value, "note": note} if note else value
    print(f"  {name} = {value if not isinstance(value, float) else f'{value:.3g}'}" + (f"  ({note})" if note else ""),
          flush=True)

  def fraction(self, result: Result) -> Optional[float]:
    if not result.flops or not self.gemm_flops_per_s or not result.seconds:
      return None
    return result.flops / result.seconds / self.gemm_flops_per_s

  def markdown(self) -> str:
    lines = [f"Conditions: {self.conditions['summary']}",
             f"Measured matmul throughput (float32 GEMM): "
             f"{self.gemm_flops_per_s / 1e9:.0f} GFLOP/s" if self.gemm_flops_per_s else "GEMM not measured", "",
             "| section | case | compile s | run | CPU s | model GFLOP | GFLOP/s | % GEMM | XLA peak MiB | notes |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in self.results:
      frac = self.fraction(r)
      lines.append("| " + " | ".join([
          r.section, r.case, f"{r.compile_s:.1f}" if r.compile_s is not None else "",
          _fmt_s(r.seconds), f"{r.cpu_s:.2f}" if r.cpu_s is not None else "", f"{r.flops / 1e9:.1f}" if r.flops else "",
          f"{r.flops / r.seconds / 1e9:.1f}" if r.flops else "", f"{frac:.0%}" if frac is not None else "",
          f"{r.memory_bytes / 2 ** 20:.0f}" if r.memory_bytes else "", r.notes]) + " |")
    if self.figures:
      lines += ["", "| figure | value |", "|---|---|"]
      for name, value in self.figures.items():
        lines.append(f"| {name} | {_fmt_value(value)} |")
    return "\n".join(lines)

  def to_json(self) -> dict:
    return {"conditions": self.conditions | {"load_average_end": os.getloadavg()},
            "gemm_flops_per_s": self.gemm_flops_per_s, "figures": self.figures,
            "results": [dataclasses.asdict(r) | {"fraction_of_gemm": self.fraction(r)} for r in self.results]}

  def write_json(self, path: str):
    with open(path, "w") as f:
      json.dump(self.to_json(), f, indent=1, default=float)


def _fmt_s(seconds: float) -> str:
  return f"{seconds * 1e3:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _fmt_value(value) -> str:
  if isinstance(value, dict):
    return f"{_fmt_value(value['value'])} ({value['note']})"
  return f"{value:.3g}" if isinstance(value, float) else str(value)


def conditions() -> dict:
  """Versions, device, CPU model and load average at the start."""
  import flax
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    cpu = f"{names[0]} x {len(names)}" if names else cpu
  except OSError:
    pass
  device = jax.devices()[0]
  load = os.getloadavg()
  info = {"jax": jax.__version__, "jaxlib": getattr(jax, "lib", None) and jax.lib.__version__, "flax": flax.__version__,
          "numpy": np.__version__, "python": platform.python_version(), "backend": device.platform,
          "device": getattr(device, "device_kind", str(device)), "devices": len(jax.devices()), "cpu": cpu,
          "load_average_start": load, "attention_env": os.environ.get("MDT_ATTENTION")}
  info["summary"] = (f"jax {info['jax']}, flax {info['flax']}, {info['backend']} ({info['device']}; {cpu}), "
                     f"load average at start {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")
  return info


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def compile_fn(fn: Callable, *args, donate_argnums=(), static_argnames=None):
  """-> (compiled executable, compile seconds, XLA peak bytes)."""
  start = time.perf_counter()
  compiled = jax.jit(fn, donate_argnums=donate_argnums).lower(*args).compile()
  seconds = time.perf_counter() - start
  return compiled, seconds, memory_bytes(compiled)


def memory_bytes(compiled) -> Optional[int]:
  try:
    m = compiled.memory_analysis()
    return int(m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
  except Exception:  # noqa: BLE001 -- not every backend reports it
    return None


def run_timed(compiled, *args, repeats: int = 3, carry: int = 0, cheap_s: float = 2.0) -> tuple[float, float]:
  """-> median (wall, process CPU) seconds of calls of ``compiled`` (block_until_ready). The first call
  is a warm-up when it is cheap (< ``cheap_s``); a slow first call counts as the first of the
  repeats. ``carry``: the first ``carry`` outputs become the first ``carry`` arguments of the next
  call (donated training state). CPU seconds are the robust figure on a shared, loaded machine."""
  args = list(args)

  def call():
    start, cpu = time.perf_counter(), time.process_time()
    out = jax.block_until_ready(compiled(*args))
    if carry:
      args[:carry] = list(out[:carry])
    return time.perf_counter() - start, time.process_time() - cpu

  first = call()
  times = [] if first[0] < cheap_s else [first]
  while len(times) < max(repeats, 1):
    times.append(call())
  wall, cpu = np.median(np.asarray(times), axis=0)
  return float(wall), float(cpu)


def measure(report: Report, section: str, case: str, fn: Callable, *args, flops=None, repeats: int = 3,
            carry: int = 0, donate_argnums=(), notes: str = "", **extra) -> Result:
  """Compiles ``fn`` for ``args`` (timed apart), runs it, adds the Result to the report. A program
  whose planned peak exceeds 90% of the memory available now is not run (a shared machine)."""
  compiled, compile_s, mem = compile_fn(fn, *args, donate_argnums=donate_argnums)
  available = available_bytes()
  if mem and available and mem > 0.9 * available:
    print(f"  {section}[{case}]: compile {compile_s:.1f} s; not run: XLA plans {mem / 2 ** 30:.1f} GiB, "
          f"{available / 2 ** 30:.1f} GiB available", flush=True)
    report.figure(f"{section}[{case}] skipped", f"compiled in {compile_s:.1f} s; needs {mem / 2 ** 30:.1f} GiB, "
                  f"{available / 2 ** 30:.1f} available")
    return Result(section, case, float("nan"), compile_s, flops, mem, "not run (memory)")
  seconds, cpu = run_timed(compiled, *args, repeats=repeats, carry=carry)
  return report.add(Result(section, case, seconds, compile_s, flops, mem, notes, cpu, extra))


def available_bytes() -> Optional[int]:
  """Free memory of the first device (its allocator's limit less what is in use) on an accelerator;
  MemAvailable of /proc/meminfo on a Linux CPU host; else None."""
  if jax.default_backend() != "cpu":
    stats = jax.devices()[0].memory_stats() or {}
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0) if "bytes_limit" in stats else None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def gemm_throughput(n: int = 4096, dtype=np.float32, repeats: int = 5) -> float:
  """FLOP/s of an n x n x n matmul in ``dtype`` at full precision (best of ``repeats``)."""
  a = jax.device_put(np.random.default_rng(0).standard_normal((n, n)).astype(dtype))
  b = jax.device_put(np.random.default_rng(1).standard_normal((n, n)).astype(dtype))
  f = jax.jit(lambda a, b: jax.numpy.matmul(a, b, precision=jax.lax.Precision.HIGHEST))
  jax.block_until_ready(f(a, b))
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - start)
  return 2 * n ** 3 / best
