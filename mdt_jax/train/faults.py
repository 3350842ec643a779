"""Checkpoint corruptions, one per way a disk or a person damages a step: what launch/soak.py and the
tests inflict on a saved step to check that a restore detects it and falls back.

Kinds: ``truncated_file`` (the largest data file cut to half), ``deleted_metadata`` (``state/_METADATA``
removed), ``garbage_checkpoint`` (every file of ``state/`` overwritten with a few bytes),
``random_bytes`` (4 KiB of random bytes written into the middle of the largest data file, its size
unchanged) and ``bit_flip`` (one bit of the largest data file flipped at a random offset). The last
two keep the file format valid: only checksums catch them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("truncated_file", "deleted_metadata", "garbage_checkpoint", "random_bytes", "bit_flip")


def largest_data_file(step_dir: Path) -> Path:
  """The largest array-data file of a step (under ``state/**/d/``)."""
  return max((p for p in (Path(step_dir) / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
             key=lambda p: p.stat().st_size)


def corrupt(step_dir: Path, kind: str, rng: np.random.Generator) -> Path:
  """Damages ``step_dir`` as ``kind`` says; -> the file damaged (``state/`` for garbage_checkpoint)."""
  step_dir = Path(step_dir)
  if kind == "deleted_metadata":
    target = step_dir / "state" / "_METADATA"
    target.unlink()
    return target
  if kind == "garbage_checkpoint":
    for f in (step_dir / "state").rglob("*"):
      if f.is_file():
        f.write_bytes(b"\0garbage")
    return step_dir / "state"
  target = largest_data_file(step_dir)
  data = bytearray(target.read_bytes())
  if kind == "truncated_file":
    del data[len(data) // 2:]
  elif kind == "random_bytes":
    size = min(4096, len(data) // 2)
    start = (len(data) - size) // 2
    data[start:start + size] = rng.bytes(size)
  elif kind == "bit_flip":
    offset = int(rng.integers(len(data)))
    data[offset] ^= 1 << int(rng.integers(8))
  else:
    raise ValueError(f"unknown corruption kind {kind!r}; known: {KINDS}")
  target.write_bytes(bytes(data))
  return target
