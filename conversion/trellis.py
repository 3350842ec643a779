"""TRELLIS checkpoints (``NAME.json`` + ``NAME.safetensors``) <-> Flax modules and params.

    model, params = load_checkpoint("path/to/ss_flow_img_dit_L_16l8_fp16")
    v = model.apply({"params": params}, x, t, cond)
    save_checkpoint("out/stem", model, params)   # model_config: the module or a {"name", "args"} dict

The key map is :mod:`conversion.common`'s structural map plus, per model, a ``weight_layout``
hook for its ``weight`` tensors; ``params_to_state_dict`` / ``state_dict_to_params`` apply it to
any pytree shaped like the params (gradients too).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from conversion import common
from conversion.common import ConversionError

# TRELLIS model class -> "module:attr" of ours; None: a known kind that is not implemented yet.
MODELS: dict[str, str | None] = {
    "SparseStructureFlowModel": "mdt_jax.models.ss_flow:SparseStructureFlowModel",
    "SLatFlowModel": "mdt_jax.models.slat_flow:SLatFlowModel",
    "ElasticSLatFlowModel": "mdt_jax.models.slat_flow:ElasticSLatFlowModel",
    "SparseStructureDecoder": "mdt_jax.models.ss_decoder:SparseStructureDecoder",
}
_NOT_ARGS = ("dtype", "parent", "name")


def model_class(name: str):
  """Our module class for a TRELLIS class name (ValueError if unknown, NotImplementedError if
  known but not implemented yet)."""
  if name not in MODELS:
    raise ValueError(f"unknown TRELLIS model class {name!r}; known: {sorted(MODELS)}")
  if MODELS[name] is None:
    raise NotImplementedError(f"not implemented yet: {name}")
  module, attr = MODELS[name].split(":")
  return getattr(__import__(module, fromlist=[attr]), attr)


def _arg_fields(cls) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(cls) if f.name not in _NOT_ARGS]


def build_model(config: Mapping[str, Any], *, dtype=None):
  """``{"name": class, "args": {...}}`` -> a Flax module computing in ``dtype`` (float32 default).

  Unknown or missing constructor fields raise ConversionError naming them.
  """
  name = config.get("name")
  cls = model_class(name)
  args = dict(config.get("args", {}))
  fields = _arg_fields(cls)
  known = {f.name for f in fields}
  unknown = sorted(set(args) - known)
  if unknown:
    raise ConversionError(f"{name}: unknown config field(s) {unknown}; known: {sorted(known)}")
  missing = sorted(f.name for f in fields if f.default is dataclasses.MISSING and f.name not in args)
  if missing:
    raise ConversionError(f"{name}: missing required config field(s) {missing}")
  args = {k: tuple(v) if isinstance(v, list) else v for k, v in args.items()}
  return cls(**args, dtype=jnp.float32 if dtype is None else dtype)


def model_config(model) -> dict[str, Any]:
  """The ``{"name", "args"}`` dict TRELLIS's ``from_pretrained`` needs to rebuild ``model``."""
  args = {f.name: getattr(model, f.name) for f in _arg_fields(type(model))}
  name = getattr(model, "trellis_name", type(model).__name__)
  return {"name": name, "args": {k: list(v) if isinstance(v, tuple) else v for k, v in args.items()}}


def _as_model(model_or_config):
  return build_model(model_or_config) if isinstance(model_or_config, Mapping) else model_or_config


def weight_layout(model) -> common.WeightLayoutFn:
  """The per-model hook: how each ``weight`` tensor's axes map to Flax (conversion.common)."""
  return getattr(model, "weight_layout", common.default_weight_layout)


def init_params(model, rng):
  """Fresh float32 params of ``model`` (called under ``jax.eval_shape`` for shapes only)."""
  return model.init(rng, *model.example_inputs())["params"]


def expected_shapes(model) -> dict[str, tuple[int, ...]]:
  """TRELLIS state-dict names and shapes of ``model``, via ``jax.eval_shape`` (no memory)."""
  abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
  return common.tree_to_state_dict_shapes(abstract, weight_layout(model))


def params_to_state_dict(model, tree) -> dict[str, np.ndarray]:
  """Flax params (or grads, or any tree shaped like them) -> ``{trellis_key: np.ndarray}``."""
  return common.tree_to_state_dict(jax.device_get(tree), weight_layout(model))


def state_dict_to_params(model, state_dict: Mapping[str, np.ndarray], *, source: str = "state dict"):
  """Strictly checked ``{trellis_key: array}`` -> float32 Flax params for ``model``."""
  common.check_state_dict(expected_shapes(model), state_dict, source)
  tree = common.state_dict_to_tree(state_dict, weight_layout(model))
  params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float32)), tree)
  check = getattr(model, "check_params", None)
  if check is not None:
    check(params, source)
  return params


def read_config(stem: str | Path) -> dict[str, Any]:
  path = Path(str(stem) + ".json")
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint config not found: {path}")
  try:
    config = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(config, dict) or "name" not in config:
    raise ConversionError(f"{path}: expected an object with 'name' and 'args'")
  return config


def load_checkpoint(stem: str | Path, *, dtype=None):
  """Reads ``stem.json`` + ``stem.safetensors`` -> ``(model, params)``.

  Params are float32 whatever the file stores; ``dtype`` is the compute dtype of the model's
  trunk (float32 unless ``jnp.bfloat16``/``jnp.float16`` is asked for).
  """
  stem = Path(str(stem).removesuffix(".json").removesuffix(".safetensors"))
  model = build_model(read_config(stem), dtype=dtype)
  weights = Path(str(stem) + ".safetensors")
  params = state_dict_to_params(model, common.read_safetensors(weights), source=str(weights))
  return model, params


def save_checkpoint(path: str | Path, model_config_or_model, params, *, storage_dtype=None):
  """Writes ``path.json`` + ``path.safetensors`` in TRELLIS's format.

  Every tensor is float16 when the config has ``use_fp16``, else float32, unless ``storage_dtype``
  says otherwise (the toy teachers are stored as float16 and computed in float32). Both files are
  written atomically; nothing is written if the params do not fit the model.
  """
  model = _as_model(model_config_or_model)
  config = model_config(model)
  stem = Path(str(path).removesuffix(".json").removesuffix(".safetensors"))
  state_dict = params_to_state_dict(model, params)
  common.check_state_dict(expected_shapes(model), state_dict, f"params for {stem}")
  dtype = storage_dtype or (np.float16 if config["args"].get("use_fp16") else np.float32)
  state_dict = {k: np.asarray(v).astype(dtype) for k, v in state_dict.items()}
  common.write_safetensors(Path(str(stem) + ".safetensors"), state_dict)
  common.atomic_write(Path(str(stem) + ".json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(config, indent=4)))
