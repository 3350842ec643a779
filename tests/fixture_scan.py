"""Classifies the files of a TRELLIS fixture directory by content (docs/design.md, Fixture directories).

Cases: a model case (``NAME.json`` naming a model class + ``NAME.safetensors`` + ``NAME.io.npz``),
a sampler case (``sampler_*.io.npz``), an MDT loss case (``mdt_loss_*.io.npz``), an MDT
prediction/target case (``mdt_v_pred_tgt.io.npz``), an image-encoder case (a directory ``NAME/``
in the transformers layout, ``config.json`` + ``model.safetensors``, with ``NAME.io.npz``: TRELLIS.2's
DINOv3), a Gaussian render case (``gs_render_*.io.npz``, in the decoder fixtures). Auxiliary files are
not cases. Anything else makes :func:`scan` raise, naming the file. TRELLIS.2's directory
(``MDT_TRELLIS2_FIXTURES``) and the decoders' (``MDT_DECODER_FIXTURES``) are scanned the same way.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent
TRELLIS_DIR = Path(os.environ.get("MDT_TRELLIS_FIXTURES", TESTS_DIR / "fixtures" / "trellis"))
TRELLIS2_DIR = Path(os.environ.get("MDT_TRELLIS2_FIXTURES", TESTS_DIR / "fixtures" / "trellis2"))
DECODER_DIR = Path(os.environ.get("MDT_DECODER_FIXTURES", TESTS_DIR / "fixtures" / "trellis_decoders"))
AUXILIARY = ("manifest.json", "trellis_param_shapes.json", "trellis2_param_shapes.json",
             "trellis_decoder_param_shapes.json", "README.md")


@dataclasses.dataclass(frozen=True)
class Case:
  kind: str            # "model", "sampler", "mdt_loss", "mdt_v_pred_tgt", "encoder", "render"
  name: str            # file stem, e.g. "ss_flow" or "sampler_cfg"
  io: Path             # the .io.npz
  model_name: str = ""  # model cases: the TRELLIS class in NAME.json

  @property
  def stem(self) -> Path:
    return self.io.with_name(self.name)

  def __str__(self):
    return self.name


def _model_name(js: Path) -> str | None:
  try:
    config = json.loads(js.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"fixture {js}: not valid JSON ({e})") from e
  return config.get("name") if isinstance(config, dict) and "args" in config else None


def scan(directory: Path = TRELLIS_DIR) -> list[Case]:
  directory = Path(directory)
  if not directory.is_dir():
    raise FileNotFoundError(f"fixture directory not found: {directory}")
  cases, understood = [], set()
  for path in sorted(directory.iterdir()):
    name = path.name
    if name in AUXILIARY or name.endswith(".grads.safetensors"):
      understood.add(name)
    elif path.is_dir() and {"config.json", "model.safetensors"} <= {p.name for p in path.iterdir()}:
      if (directory / f"{name}.io.npz").exists():
        understood |= {name, f"{name}.io.npz"}
        cases.append(Case("encoder", name, directory / f"{name}.io.npz"))
    elif name.endswith(".json") and _model_name(path):
      stem = name.removesuffix(".json")
      if (directory / f"{stem}.safetensors").exists():
        understood |= {name, f"{stem}.safetensors"}
        if (directory / f"{stem}.io.npz").exists():
          understood.add(f"{stem}.io.npz")
          cases.append(Case("model", stem, directory / f"{stem}.io.npz", _model_name(path)))
    elif name.endswith(".io.npz"):
      stem = name.removesuffix(".io.npz")
      kind = ("sampler" if stem.startswith("sampler_") else "mdt_loss" if stem.startswith("mdt_loss_")
              else "mdt_v_pred_tgt" if stem == "mdt_v_pred_tgt" else "render" if stem.startswith("gs_render_")
              else None)
      if kind:
        understood.add(name)
        cases.append(Case(kind, stem, path))
  unknown = sorted(p.name for p in directory.iterdir() if p.name not in understood)
  if unknown:
    raise ValueError(f"fixture directory {directory}: files not understood: {unknown}")
  return cases


def cases_of(kind: str, directory: Path = TRELLIS_DIR) -> list[Case]:
  return [c for c in scan(directory) if c.kind == kind]
