"""Progress lines with an ETA for the demo's tasks.

Every task has an estimated cost (`weight`, in seconds of the machine the defaults were sized on);
the ETA scales the remaining weight by how fast the tasks run so far actually went (tasks skipped
because their results were stored count as done and take no time).
"""
from __future__ import annotations

import time


class Progress:
  def __init__(self, weights: dict[str, float], out=print):
    self.weights, self.out = dict(weights), out
    self.done: dict[str, float] = {}
    self.start = time.perf_counter()
    self.ran_weight = 0.0
    self.ran_seconds = 0.0
    self._task, self._task_start = None, 0.0

  def begin(self, name: str):
    if name not in self.weights:
      raise KeyError(f"progress: unknown task {name!r}")
    self._task, self._task_start = name, time.perf_counter()
    self.out(f"[{len(self.done) + 1}/{len(self.weights)}] {name} ...")

  def end(self, skipped: bool = False):
    name, seconds = self._task, time.perf_counter() - self._task_start
    self.done[name] = seconds
    if not skipped:
      self.ran_weight += self.weights[name]
      self.ran_seconds += seconds
    remaining = sum(w for k, w in self.weights.items() if k not in self.done)
    rate = self.ran_seconds / self.ran_weight if self.ran_weight else 1.0
    status = "stored result, skipped" if skipped else f"{seconds:.1f} s"
    self.out(f"    {name}: {status} | elapsed {(time.perf_counter() - self.start) / 60:.1f} min, "
             f"ETA {remaining * rate / 60:.1f} min")

  def task(self, name: str, fn, stored=None):
    """Runs `fn()` as task `name` unless `stored()` returns a stored result (then that is returned)."""
    self.begin(name)
    result = stored() if stored is not None else None
    if result is not None:
      self.end(skipped=True)
      return result
    result = fn()
    self.end()
    return result
