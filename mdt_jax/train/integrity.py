"""Checksums of checkpoint files: recorded once a save has landed, verified before a step is used.

orbax-checkpoint 0.12.8 does not check the data it reads back: its zarr3 arrays carry a CRC-32C of
each shard's index only, so flipped bits or overwritten bytes in the chunk data restore silently as
changed values. Every file of a step directory is therefore hashed (CRC-32; zlib reads ~2 GiB/s on
one core and releases the GIL) into ``<step>/checksums.process_<i>.json``:
``{"process_count": P, "files": {path relative to the step: [size, crc32]}}``, written atomically.
Process i records the files it wrote (those under a ``process_<i>`` or ``ocdbt.process_<i>``
directory); process 0 also records the shared ones. A background thread records a step once orbax
has renamed it into place, so the training step never waits for it. On restore, process i verifies
the manifests j = i, i + P', i + 2P', ... (P' processes now): each what it wrote when the process
count is unchanged.
"""
from __future__ import annotations

import json
import queue
import re
import threading
import time
import zlib
from pathlib import Path

from absl import logging

from conversion.common import atomic_write

MANIFEST = "checksums.process_{}.json"
_MANIFEST_RE = re.compile(r"checksums\.process_\d+\.json")
_OWNER_RE = re.compile(r"(?:ocdbt\.)?process_(\d+)")
_CHUNK = 16 << 20


def file_crc32(path: Path) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _owner(relative: Path) -> int:
  """The process that wrote a file of a step: its ``process_<i>`` directory, else 0 (shared files)."""
  for part in relative.parts[:-1] + (relative.stem,):
    match = _OWNER_RE.fullmatch(part)
    if match:
      return int(match.group(1))
  return 0


def _files(step_dir: Path) -> list[Path]:
  return sorted(p.relative_to(step_dir) for p in step_dir.rglob("*")
                if p.is_file() and not _MANIFEST_RE.fullmatch(p.name))


def record(step_dir: Path, process_index: int, process_count: int):
  """Writes this process's manifest of ``step_dir`` (a landed step: nothing writes to it any more)."""
  files = {str(rel): [(step_dir / rel).stat().st_size, file_crc32(step_dir / rel)]
           for rel in _files(step_dir) if _owner(rel) == process_index}
  text = json.dumps({"process_count": process_count, "files": files}, sort_keys=True)
  atomic_write(step_dir / MANIFEST.format(process_index), lambda tmp: Path(tmp).write_text(text))


def _read_manifest(step_dir: Path, index: int) -> dict:
  path = step_dir / MANIFEST.format(index)
  if not path.is_file():
    raise ValueError(f"{path.name} is missing (no checksums were recorded: the run stopped before they were "
                     f"written, or the file was deleted)")
  try:
    return json.loads(path.read_text())
  except (ValueError, UnicodeDecodeError) as e:
    raise ValueError(f"{path.name} is unreadable ({e})") from e


def verify(step_dir: Path, process_index: int = 0, process_count: int = 1) -> str | None:
  """-> None when this process's share of ``step_dir`` matches its manifests, else the cause, naming
  the file (missing, another size, another checksum) or the manifest."""
  try:
    saved_count = int(_read_manifest(step_dir, 0)["process_count"])
    for index in range(process_index, saved_count, process_count):
      for rel, (size, crc) in _read_manifest(step_dir, index)["files"].items():
        path = step_dir / rel
        if not path.is_file():
          return f"{rel} is missing"
        if path.stat().st_size != size:
          return f"{rel} has {path.stat().st_size} bytes, {size} when saved"
        if file_crc32(path) != crc:
          return f"{rel}: checksum mismatch (CRC-32 {file_crc32(path):#010x} read, {crc:#010x} when saved)"
  except (ValueError, KeyError, TypeError) as e:
    return str(e)
  return None


class Recorder:
  """Records each saved step's checksums in a background (daemon) thread once the step has landed.

  ``after_save(step_dir)`` after each save; ``wait()`` after the checkpoint manager's
  ``wait_until_finished()``: a step that has not landed by then never will, and is given up; an error
  of the thread is raised there.
  """

  def __init__(self, process_index: int, process_count: int):
    self.process_index, self.process_count = process_index, process_count
    self._steps: queue.Queue[Path] = queue.Queue()
    self._saves_finished = threading.Event()
    self._error: BaseException | None = None
    threading.Thread(target=self._work, name="checksums", daemon=True).start()

  def after_save(self, step_dir: Path):
    self._saves_finished.clear()
    self._steps.put(Path(step_dir))

  def _work(self):
    while True:
      step_dir = self._steps.get()
      try:
        self._record_when_landed(step_dir)
      except BaseException as e:  # noqa: BLE001  handed to wait()
        self._error = e
      finally:
        self._steps.task_done()

  def _record_when_landed(self, step_dir: Path):
    while not step_dir.is_dir():
      if self._saves_finished.is_set() and not step_dir.is_dir():
        return
      time.sleep(0.02)
    try:
      record(step_dir, self.process_index, self.process_count)
    except FileNotFoundError:  # removed by the manager's retention policy meanwhile
      logging.info("checkpoint %s was removed before its checksums were recorded", step_dir)

  def wait(self):
    self._saves_finished.set()
    self._steps.join()
    if self._error is not None:
      error, self._error = self._error, None
      raise error
