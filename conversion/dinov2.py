"""Strict conversion of upstream DINOv2 checkpoints (``facebookresearch/dinov2`` state dicts).

The key map is ``conversion/common.py``'s generic one (``DinoV2``'s submodules are named after the
state dict): ``blocks.0.attn.qkv.weight`` [3D, D] <-> ``params["blocks_0"]["attn"]["qkv"]["kernel"]``
[D, 3D], ``patch_embed.proj.weight`` [D, C, p, p] <-> ``patch_embed/proj/kernel`` [p, p, C, D],
1-D ``weight`` <-> ``scale``; every other key (``cls_token``, ``pos_embed``, ``register_tokens``,
``mask_token``, ``blocks_0/ls1/gamma``, biases) keeps its name and value.

Weights come as ``.safetensors`` or as the official ``.pth`` (``torch.save`` of the state dict),
which needs the optional extra ``pip install '.[torch]'``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from conversion.common import ConversionError, check_state_dict, read_safetensors, state_dict_to_tree, \
    tree_to_state_dict
from mdt_jax.models.dinov2 import PRESETS, DinoV2

DEFAULT_PRESET = "dinov2_vitl14_reg"

# Upstream constructor fields that map one to one onto DinoV2's fields.
_MODEL_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio",
                 "num_register_tokens", "qkv_bias", "proj_bias", "ffn_bias", "init_values")
# Fields that do not change inference (stochastic depth is off at inference).
_TRAINING_ONLY = ("drop_path_rate", "drop_path_uniform")
# Fields whose only supported value is the dinov2_*_reg one: (name, accepts(value), what is supported).
_FIXED = {
    "ffn_layer": (lambda v: v == "mlp", "'mlp'"),
    "block_chunks": (lambda v: v == 0, "0 (unchunked block keys)"),
    "interpolate_antialias": (lambda v: v is True, "true"),
    "interpolate_offset": (lambda v: v == 0, "0.0"),
    # Descriptive text in the fixtures' config.json; checked so that another layer is refused.
    "act_layer": (lambda v: isinstance(v, str) and "GELU" in v and "tanh" not in v, "an exact (erf) GELU"),
    "norm_layer": (lambda v: isinstance(v, str) and "LayerNorm" in v and "1e-6" in v,
                   "LayerNorm with eps 1e-6"),
    "block_fn": (lambda v: isinstance(v, str) and "Block" in v, "the standard Block"),
}


def model_kwargs(constructor_args: Mapping[str, Any], source: str) -> dict[str, Any]:
  """Upstream ``DinoVisionTransformer`` constructor arguments -> :class:`DinoV2` fields.

  Every field of ``DinoV2`` must be given (upstream's defaults differ from dinov2_vitl14_reg's).
  Raises ConversionError naming a missing or unknown field or an unsupported value.
  """
  missing = [name for name in _MODEL_FIELDS if name not in constructor_args]
  if missing:
    raise ConversionError(f"{source}: missing config field(s) {', '.join(map(repr, missing))}")
  kwargs = {}
  for name, value in constructor_args.items():
    if name in _MODEL_FIELDS:
      kwargs[name] = value
    elif name in _FIXED:
      accepts, supported = _FIXED[name]
      if not accepts(value):
        raise ConversionError(f"{source}: unsupported {name}={value!r} (supported: {supported})")
    elif name not in _TRAINING_ONLY:
      raise ConversionError(f"{source}: unknown config field {name!r}")
  if not kwargs.get("init_values"):  # upstream: a falsy init_values means no LayerScale
    kwargs["init_values"] = None
  return kwargs


def model_from_config(config: str | os.PathLike | None = None, *, dtype: Any = None) -> DinoV2:
  """A :class:`DinoV2` from a preset name (default ``dinov2_vitl14_reg``) or a json file path.

  The json holds ``constructor_args`` (upstream names) as the fixtures' ``config.json`` does; its
  other top-level entries are ignored. ``dtype``: compute dtype (None: float32).
  """
  config = DEFAULT_PRESET if config is None else config
  dtype = jnp.float32 if dtype is None else dtype
  if isinstance(config, str) and config in PRESETS:
    return DinoV2(**PRESETS[config], dtype=dtype)
  path = Path(config)
  if not path.is_file():
    raise ConversionError(f"unknown DINOv2 config {str(config)!r}: neither a preset "
                          f"({', '.join(sorted(PRESETS))}) nor a json file")
  try:
    data = json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path}: not valid json ({e})") from e
  if not isinstance(data, dict) or not isinstance(data.get("constructor_args"), dict):
    raise ConversionError(f"{path}: missing field 'constructor_args'")
  return DinoV2(**model_kwargs(data["constructor_args"], str(path)), dtype=dtype)


def param_shapes(model: DinoV2) -> dict[str, Any]:
  """The model's param tree as ``jax.ShapeDtypeStruct`` leaves, via ``jax.eval_shape`` (no memory)."""
  images = jax.ShapeDtypeStruct((1, model.img_size, model.img_size, model.in_chans), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)["params"]


def state_dict_shapes(model: DinoV2) -> dict[str, tuple[int, ...]]:
  """Upstream key -> shape (torch layout) of every tensor the model's checkpoint must hold."""
  # Zero-stride views stand in for the tensors, so the generic map runs without allocating them.
  views = jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), param_shapes(model))
  return {k: v.shape for k, v in tree_to_state_dict(views).items()}


def params_to_state_dict(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """A params-shaped pytree (params, gradients) -> upstream-named numpy dict, torch layouts."""
  return tree_to_state_dict(tree)


def state_dict_to_params(model: DinoV2, state_dict: Mapping[str, np.ndarray], source: str = "state dict"
                         ) -> dict[str, Any]:
  """Strictly checked upstream state dict -> float32 param tree (jax arrays)."""
  check_state_dict(state_dict_shapes(model), state_dict, source)
  tree = state_dict_to_tree(state_dict)
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), tree)


def _read_pth(path: Path) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"reading {path} (a .pth checkpoint) needs PyTorch: pip install '.[torch]' "
                      "(or convert it to .safetensors elsewhere)") from e
  try:
    obj = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises many kinds of errors for unreadable pickles
    raise ConversionError(f"{path}: not a readable torch checkpoint ({e})") from e
  if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
    raise ConversionError(f"{path}: expected a flat state dict of tensors, got {type(obj).__name__}")
  return {k: v.detach().float().numpy() if v.dtype == torch.bfloat16 else v.detach().numpy()
          for k, v in obj.items()}


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads ``.safetensors`` (no torch needed) or ``.pth`` / ``.pt`` (optional torch extra)."""
  path = Path(path)
  if path.suffix == ".safetensors":
    return read_safetensors(path)
  if path.suffix in (".pth", ".pt"):
    if not path.is_file():
      raise FileNotFoundError(f"checkpoint weights not found: {path}")
    return _read_pth(path)
  raise ConversionError(f"{path}: unknown checkpoint format {path.suffix!r} (expected .safetensors or .pth)")


def load_checkpoint(path: str | os.PathLike, config: str | os.PathLike | None = None, *,
                    dtype: Any = None) -> tuple[DinoV2, dict[str, Any]]:
  """``model, params = load_checkpoint(path, config)``: an upstream DINOv2 checkpoint for Flax.

  Args:
    path: ``.safetensors`` or ``.pth`` state dict with upstream key names.
    config: preset name (default ``dinov2_vitl14_reg``) or a json with ``constructor_args``.
    dtype: compute dtype of the returned model (None: float32); params are float32 always.
  Raises:
    ConversionError naming every missing / unexpected key, shape or dtype mismatch, unknown config
    field or unreadable file; nothing is returned partially.
  """
  model = model_from_config(config, dtype=dtype)
  params = state_dict_to_params(model, read_state_dict(path), str(path))
  return model, params
