"""Discovery of DINOv2 golden fixture sets (shared by the DINOv2 test files).

A set is a directory holding ``config.json`` (``constructor_args``, ``files``: ``weights`` list and
``cases`` {name: npz}) plus the files it lists. The scan root is ``$MDT_DINOV2_FIXTURES`` when set,
else ``tests/fixtures/dinov2``; the root itself and each of its immediate subdirectories that hold
a ``config.json`` are sets. A listed file that is missing, or a ``case_*.npz`` that is not listed,
is a scan problem (reported by a failing test, never skipped); the one exception is a listed
``.pth`` (the same weights in torch's format, possibly left out for size): without it only the
optional-torch test skips.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

DEFAULT_ROOT = Path(__file__).parent / "fixtures" / "dinov2"
SHAPES_FILE = "dinov2_vitl14_reg_param_shapes.json"


@dataclasses.dataclass(frozen=True)
class FixtureSet:
  root: Path
  config: Path
  weights: tuple[Path, ...]
  cases: tuple[tuple[str, Path], ...]  # (case name, npz path)

  @property
  def safetensors(self) -> Path | None:
    return next((w for w in self.weights if w.suffix == ".safetensors"), None)

  @property
  def pth(self) -> Path | None:
    return next((w for w in self.weights if w.suffix == ".pth"), None)


def scan_root() -> Path:
  return Path(os.environ.get("MDT_DINOV2_FIXTURES", DEFAULT_ROOT))


def _read_set(directory: Path) -> tuple[FixtureSet | None, list[str]]:
  problems = []
  config_path = directory / "config.json"
  try:
    files = json.loads(config_path.read_text())["files"]
    weights, cases = list(files["weights"]), dict(files["cases"])
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    return None, [f"{config_path}: unreadable 'files' block ({e!r})"]
  if not cases:
    problems.append(f"{config_path}: lists no cases")
  required = [*(w for w in weights if not w.endswith(".pth")), *cases.values()]
  problems += [f"{directory}: listed file {name!r} is missing" for name in required
               if not (directory / name).is_file()]
  weights = [w for w in weights if (directory / w).is_file()]
  if not weights:
    problems.append(f"{config_path}: none of the listed weights is present")
  problems += [f"{directory}: {p.name} is not listed in config.json" for p in sorted(directory.glob("case_*.npz"))
               if p.name not in cases.values()]
  fixture_set = FixtureSet(directory, config_path, tuple(directory / w for w in weights),
                           tuple((name, directory / f) for name, f in sorted(cases.items())))
  return fixture_set, problems


def scan() -> tuple[list[FixtureSet], list[str]]:
  """All fixture sets under the scan root, and the problems found (empty when all is well)."""
  root = scan_root()
  if not root.is_dir():
    return [], [f"DINOv2 fixture directory {root} does not exist"]
  dirs = [d for d in [root, *sorted(p for p in root.iterdir() if p.is_dir())] if (d / "config.json").is_file()]
  if not dirs:
    return [], [f"{root}: no config.json (in it or a subdirectory)"]
  sets, problems = [], []
  for d in dirs:
    fixture_set, found = _read_set(d)
    problems += found
    if fixture_set is not None and not found:
      sets.append(fixture_set)
  return sets, problems


def shapes_file() -> Path:
  """The full-size shape listing: from the scan root when it has one, else the committed copy."""
  for root in (scan_root(), DEFAULT_ROOT):
    if (root / SHAPES_FILE).is_file():
      return root / SHAPES_FILE
  raise FileNotFoundError(f"{SHAPES_FILE} not found in {scan_root()} or {DEFAULT_ROOT}")
