"""Strict conversion of DINOv3 checkpoints in the Hugging Face transformers layout (``DINOv3ViTModel``:
a directory with ``config.json`` and ``model.safetensors``) to :class:`mdt_jax.models.dinov3.DinoV3`.

    model, params = load_checkpoint("path/to/dinov3-vitl16-pretrain-lvd1689m")

Key map (transformers -> ours, torch layouts; ``conversion/common.py``'s generic map does the rest):
``embeddings.{cls_token,register_tokens,mask_token}`` -> the same names; ``embeddings.patch_embeddings``
-> ``patch_embed.proj``; ``layer.{i}`` -> ``blocks.{i}`` with ``norm1``/``norm2`` kept,
``attention.{q,k,v}_proj`` fused row-wise into ``attn.qkv`` (k has no bias: zeros in its slice),
``attention.o_proj`` -> ``attn.proj``, ``layer_scale{1,2}.lambda1`` -> ``ls{1,2}.gamma``,
``mlp.up_proj``/``down_proj`` -> ``mlp.fc1``/``fc2``; ``norm`` kept.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from conversion.common import ConversionError, check_state_dict, read_json, read_safetensors, \
    state_dict_to_tree, tree_to_state_dict
from mdt_jax.models.dinov3 import DinoV3

# transformers config fields that are DinoV3's fields one to one.
_MODEL_FIELDS = ("image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "num_register_tokens", "rope_theta", "layer_norm_eps", "layerscale_value")
# Fields whose only supported value is the released checkpoints': name -> value.
_FIXED = {"hidden_act": "gelu", "use_gated_mlp": False, "key_bias": False, "query_bias": True, "value_bias": True,
          "proj_bias": True, "mlp_bias": True}
# Fields that do not change inference: training-time augmentation and dropout, bookkeeping.
_IGNORED = ("architectures", "attention_dropout", "drop_path_rate", "dtype", "torch_dtype", "initializer_range",
            "model_type", "pos_embed_jitter", "pos_embed_rescale", "pos_embed_shift", "transformers_version",
            "out_features", "out_indices", "stage_names", "apply_layernorm", "reshape_hidden_states")
_LAYER_KEYS = (  # transformers -> ours, per layer
    ("layer.{i}.norm1.weight", "blocks.{i}.norm1.weight"), ("layer.{i}.norm1.bias", "blocks.{i}.norm1.bias"),
    ("layer.{i}.norm2.weight", "blocks.{i}.norm2.weight"), ("layer.{i}.norm2.bias", "blocks.{i}.norm2.bias"),
    ("layer.{i}.attention.o_proj.weight", "blocks.{i}.attn.proj.weight"),
    ("layer.{i}.attention.o_proj.bias", "blocks.{i}.attn.proj.bias"),
    ("layer.{i}.layer_scale1.lambda1", "blocks.{i}.ls1.gamma"),
    ("layer.{i}.layer_scale2.lambda1", "blocks.{i}.ls2.gamma"),
    ("layer.{i}.mlp.up_proj.weight", "blocks.{i}.mlp.fc1.weight"),
    ("layer.{i}.mlp.up_proj.bias", "blocks.{i}.mlp.fc1.bias"),
    ("layer.{i}.mlp.down_proj.weight", "blocks.{i}.mlp.fc2.weight"),
    ("layer.{i}.mlp.down_proj.bias", "blocks.{i}.mlp.fc2.bias"),
)
_QKV = ("q", "k", "v")
_OTHER_KEYS = (("embeddings.cls_token", "cls_token"), ("embeddings.register_tokens", "register_tokens"),
               ("embeddings.mask_token", "mask_token"),
               ("embeddings.patch_embeddings.weight", "patch_embed.proj.weight"),
               ("embeddings.patch_embeddings.bias", "patch_embed.proj.bias"), ("norm.weight", "norm.weight"),
               ("norm.bias", "norm.bias"))


def model_kwargs(config: Mapping[str, Any], source: str) -> dict[str, Any]:
  """A transformers ``DINOv3ViTConfig`` dict -> :class:`DinoV3` fields; ConversionError naming a
  missing or unknown field or an unsupported value."""
  missing = [name for name in _MODEL_FIELDS if name not in config]
  if missing:
    raise ConversionError(f"{source}: missing config field(s) {', '.join(map(repr, missing))}")
  for name, value in config.items():
    if name in _FIXED and value != _FIXED[name]:
      raise ConversionError(f"{source}: unsupported {name}={value!r} (supported: {_FIXED[name]!r})")
    if name not in _MODEL_FIELDS and name not in _FIXED and name not in _IGNORED:
      raise ConversionError(f"{source}: unknown config field {name!r}")
  return {name: config[name] for name in _MODEL_FIELDS}


def _renames(depth: int) -> dict[str, str]:
  names = dict(_OTHER_KEYS)
  for i in range(depth):
    names.update({theirs.format(i=i): ours.format(i=i) for theirs, ours in _LAYER_KEYS})
  return names


def from_transformers(state_dict: Mapping[str, np.ndarray], depth: int) -> dict[str, np.ndarray]:
  """transformers keys -> ours (``attn.qkv`` fused; every other key renamed); torch layouts kept."""
  out = {ours: np.asarray(state_dict[theirs]) for theirs, ours in _renames(depth).items()}
  for i in range(depth):
    proj = lambda x, part: np.asarray(state_dict[f"layer.{i}.attention.{x}_proj.{part}"])
    out[f"blocks.{i}.attn.qkv.weight"] = np.concatenate([proj(x, "weight") for x in _QKV])
    q_bias = proj("q", "bias")
    out[f"blocks.{i}.attn.qkv.bias"] = np.concatenate([q_bias, np.zeros_like(q_bias), proj("v", "bias")])
  return out


def to_transformers(state_dict: Mapping[str, Any], depth: int) -> dict[str, Any]:
  """Inverse of :func:`from_transformers` (the k slice of the bias, 0, is not a transformers tensor)."""
  out = {theirs: state_dict[ours] for theirs, ours in _renames(depth).items()}
  for i in range(depth):
    weights = np.split(np.asarray(state_dict[f"blocks.{i}.attn.qkv.weight"]), 3)
    biases = np.split(np.asarray(state_dict[f"blocks.{i}.attn.qkv.bias"]), 3)
    for x, weight, bias in zip(_QKV, weights, biases):
      out[f"layer.{i}.attention.{x}_proj.weight"] = weight
      if x != "k":
        out[f"layer.{i}.attention.{x}_proj.bias"] = bias
  return out


def state_dict_shapes(model: DinoV3) -> dict[str, tuple[int, ...]]:
  """transformers key -> shape (torch layout) of every tensor the model's checkpoint must hold."""
  images = jax.ShapeDtypeStruct((1, model.patch_size, model.patch_size, model.num_channels), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  views = jax.tree.map(lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes)
  return {k: np.shape(v) for k, v in to_transformers(tree_to_state_dict(views), model.num_hidden_layers).items()}


def state_dict_to_params(model: DinoV3, state_dict: Mapping[str, np.ndarray], source: str = "state dict"):
  """Strictly checked transformers state dict -> float32 param tree (jax arrays)."""
  check_state_dict(state_dict_shapes(model), state_dict, source)
  tree = state_dict_to_tree(from_transformers(state_dict, model.num_hidden_layers))
  return jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float32)), tree)


def load_checkpoint(directory: str | os.PathLike, *, dtype: Any = None) -> tuple[DinoV3, dict[str, Any]]:
  """``model, params = load_checkpoint(directory)``: ``config.json`` + ``model.safetensors`` in the
  transformers layout -> a :class:`DinoV3` (compute ``dtype``, float32 by default) and float32
  params. ConversionError naming every missing / unexpected / mis-shaped key, unknown or unsupported
  config field, or unreadable file."""
  directory = Path(directory)
  config_path = directory / "config.json"
  config = read_json(config_path, "DINOv3 config")
  model = DinoV3(**model_kwargs(config, str(config_path)), dtype=jnp.float32 if dtype is None else dtype)
  weights = directory / "model.safetensors"
  return model, state_dict_to_params(model, read_safetensors(weights), str(weights))
