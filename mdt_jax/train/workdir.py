"""A run directory belongs to one run: the config fingerprint of its first start, run-level files.

``<workdir>/run.json`` holds ``{"fingerprint": sha256, "fields": {dotted field: value}}``, the fields
that change what is trained (model, objective, data, optimizer, seed, ...), written once at the first
start. A later start whose config differs in any of them is refused (ConfigMismatch naming the
fields) before anything is written; RESUMABLE fields (length, logging, checkpoint and snapshot
cadence, the mesh) may change on resume. A workdir written before run.json existed is judged by its
``config.json``. Run-level files (``run.json``, ``config.json``, ``done.json``) are written atomically.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
from pathlib import Path

from conversion.common import atomic_write
from mdt_jax.errors import ConfigMismatch, UnusableWorkdir

RESUMABLE = ("total_steps", "log_every", "checkpoint_every", "keep_checkpoints", "keep_period", "snapshot_every",
             "snapshot_steps", "snapshot_count", "max_consecutive_skips", "mesh.*", "data.num_threads")


def flat_fields(config) -> dict:
  """``{dotted name: JSON value}`` of a ConfigDict (tuples as lists, as config.json stores them)."""
  return _flatten(json.loads(config.to_json_best_effort()))


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def run_fields(config_fields: dict) -> dict:
  return {k: v for k, v in config_fields.items() if not any(fnmatch.fnmatchcase(k, p) for p in RESUMABLE)}


def fingerprint(fields: dict) -> str:
  return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _read_json(path: Path) -> dict:
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError) as e:  # ValueError: not UTF-8, or not JSON
    raise UnusableWorkdir(f"{path}: unreadable ({type(e).__name__}: {e})") from e
  if not isinstance(value, dict):
    raise UnusableWorkdir(f"{path}: expected a JSON object")
  return value


class RunDir:
  """``RunDir(path)`` checks the path can hold a run (nothing is created yet)."""

  def __init__(self, path: str | Path):
    self.path = Path(path).absolute()
    if self.path.exists() and not self.path.is_dir():
      raise UnusableWorkdir(f"--workdir {self.path}: exists and is not a directory")
    existing = next(p for p in (self.path, *self.path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
      raise UnusableWorkdir(f"--workdir {self.path}: {existing} is not a writable directory")

  def stored_fields(self) -> dict | None:
    """The run-changing fields of the run this workdir holds, or None for a new workdir."""
    run, config = self.path / "run.json", self.path / "config.json"
    if run.exists():
      fields = _read_json(run).get("fields")
      if not isinstance(fields, dict):
        raise UnusableWorkdir(f"{run}: no 'fields' object")
      return fields
    return run_fields(_flatten(_read_json(config))) if config.exists() else None

  def check_config(self, config):
    """Raises ConfigMismatch naming every run-changing field where ``config`` differs from the run's."""
    stored, fields = self.stored_fields(), run_fields(flat_fields(config))
    if stored is None or stored == fields:
      return
    missing = object()
    show = lambda values, k: json.dumps(values[k]) if k in values else "absent"
    differing = [f"config.{k}: {show(stored, k)} in this workdir's run, {show(fields, k)} now"
                 for k in sorted(set(stored) | set(fields)) if stored.get(k, missing) != fields.get(k, missing)]
    raise ConfigMismatch(f"{self.path} belongs to another run: {'; '.join(differing)} (start it in a new "
                         f"--workdir; only {', '.join(RESUMABLE)} may change on resume)")

  def start(self, config):
    """Records the run (first start) and the config this start uses; call once inputs are validated."""
    self.path.mkdir(parents=True, exist_ok=True)
    if not (self.path / "run.json").exists():
      fields = run_fields(flat_fields(config))
      write_json(self.path / "run.json", {"fingerprint": fingerprint(fields), "fields": fields})
    atomic_write(self.path / "config.json", lambda tmp: Path(tmp).write_text(config.to_json_best_effort(indent=2)))

  def finished(self, config) -> bool:
    done = self.path / "done.json"
    return done.exists() and _read_json(done).get("step", -1) >= config.total_steps

  def mark_done(self, step: int, skipped: int):
    write_json(self.path / "done.json", {"step": step, "skipped": skipped})


def write_json(path: Path, value: dict):
  atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value)))
