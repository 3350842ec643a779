"""A released TRELLIS pipeline folder as users download it (``DIR/pipeline.json`` + ``DIR/ckpts/``) -> the
fields of a sample config (configs/sample.py) it determines.

``pipeline.json`` (TRELLIS's ``TrellisImageTo3DPipeline``): ``args.models`` maps ``sparse_structure_flow_model``,
``sparse_structure_decoder``, ``slat_flow_model``, ``slat_decoder_gs`` and optionally ``slat_decoder_mesh``
to checkpoint stems relative to DIR (``ckpts/NAME``: ``NAME.json`` + ``NAME.safetensors``);
``args.sparse_structure_sampler.params`` and ``args.slat_sampler.params`` hold the Euler sampler settings
(steps, cfg_strength, cfg_interval, rescale_t); ``args.slat_normalization`` the latents' mean and std.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# config field -> pipeline.json's args.models key (None: optional).
MODELS = {"ss_flow": "sparse_structure_flow_model", "ss_decoder": "sparse_structure_decoder",
          "slat_flow": "slat_flow_model", "gaussian_decoder": "slat_decoder_gs", "mesh_decoder": "slat_decoder_mesh"}
OPTIONAL = ("mesh_decoder",)
SAMPLERS = {"ss": "sparse_structure_sampler", "slat": "slat_sampler"}
SAMPLER_FIELDS = ("steps", "cfg_strength", "cfg_interval", "rescale_t")


def read_pipeline_folder(directory) -> dict[str, Any]:
  """-> ``{checkpoint_dir, ss_flow, ss_decoder, slat_flow, gaussian_decoder, mesh_decoder, ss, slat,
  slat_mean, slat_std}`` (``mesh_decoder`` "" when the pipeline has none). One ValueError or
  FileNotFoundError naming the file and every missing key or checkpoint."""
  directory = Path(directory)
  path = directory / "pipeline.json"
  if not path.is_file():
    raise FileNotFoundError(f"--pipeline: no pipeline.json in {directory}")
  try:
    args = json.loads(path.read_text())["args"]
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise ValueError(f"{path}: not a TRELLIS pipeline.json with an 'args' object ({e})") from None
  models = args.get("models", {})
  missing = [f"args.models.{key}" for field, key in MODELS.items() if key not in models and field not in OPTIONAL]
  missing += [f"args.{key}.params.{f}" for key in SAMPLERS.values() for f in SAMPLER_FIELDS
              if f not in args.get(key, {}).get("params", {})]
  missing += [f"args.slat_normalization.{f}" for f in ("mean", "std") if f not in args.get("slat_normalization", {})]
  if missing:
    raise ValueError(f"{path}: missing {', '.join(missing)}")
  values = {field: models.get(key, "") for field, key in MODELS.items()}
  absent = [f"{stem}.json" for stem in values.values() if stem and not (directory / f"{stem}.json").is_file()]
  if absent:
    raise FileNotFoundError(f"{path} names checkpoints that are not in {directory}: {', '.join(absent)}")
  values.update({stage: {f: args[key]["params"][f] for f in SAMPLER_FIELDS} for stage, key in SAMPLERS.items()})
  for stage in SAMPLERS:
    values[stage]["cfg_interval"] = tuple(values[stage]["cfg_interval"])
  norm = args["slat_normalization"]
  return dict(values, checkpoint_dir=str(directory), slat_mean=tuple(norm["mean"]), slat_std=tuple(norm["std"]))


def apply_pipeline_folder(config, defaults, directory) -> None:
  """Sets ``config``'s fields from :func:`read_pipeline_folder` where ``config`` still holds the variant's
  default (``defaults``), so that ``--config.*`` overrides win over the folder."""
  _take_unchanged(config, defaults, read_pipeline_folder(directory))


def _take_unchanged(config, defaults, values: dict) -> None:
  for name, value in values.items():
    if isinstance(value, dict):
      _take_unchanged(config[name], defaults[name], value)
    elif config[name] == defaults[name]:
      config[name] = value
