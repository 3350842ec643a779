"""The models by TRELLIS class name: build one from its ``{"name", "args"}`` config, read a module's
config back, initialise its params, and call it as a velocity field.

    model = build_model({"name": "SparseStructureFlowModel", "args": {...}}, dtype=jnp.bfloat16)
    params = init_params(model, jax.random.key(0))          # float32
    v = velocity(model)(params, x, t, cond)                  # the flows' apply(params, x, t, cond)

A model's config fields are its Flax fields (TRELLIS's constructor arguments, with their defaults),
except ``dtype``, the compute dtype, which is the caller's choice. ``conversion`` reads and writes
files of these configs; nothing here knows a file format.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from mdt_jax.models.slat_decoders import DECODERS
from mdt_jax.models.slat_flow import ElasticSLatFlowModel, SLatFlowModel
from mdt_jax.models.ss_decoder import SparseStructureDecoder
from mdt_jax.models.ss_flow import SparseStructureFlowModel

MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    SparseStructureFlowModel, SLatFlowModel, ElasticSLatFlowModel, SparseStructureDecoder) + DECODERS}
_NOT_ARGS = ("dtype", "parent", "name")


class ModelConfigError(ValueError):
  """A model config names an unknown class, an unknown field, or misses a required one."""


def model_class(name: str) -> type[nn.Module]:
  """Our module class for a TRELLIS class name (ModelConfigError naming the known ones otherwise)."""
  if name not in MODELS:
    raise ModelConfigError(f"unknown TRELLIS model class {name!r}; known: {sorted(MODELS)}")
  return MODELS[name]


def config_fields(cls: type[nn.Module]) -> list[dataclasses.Field]:
  """The config fields of a model class (its Flax fields less ``dtype``), defaults included."""
  return [f for f in dataclasses.fields(cls) if f.name not in _NOT_ARGS]


def build_model(config: Mapping[str, Any], *, dtype=None) -> nn.Module:
  """``{"name": class, "args": {...}}`` -> a module computing in ``dtype`` (float32 default).

  Lists become tuples and dicts FrozenDicts (hashable fields). Unknown or missing fields raise ModelConfigError naming them.
  """
  name = config.get("name")
  cls = model_class(name)
  args = dict(config.get("args", {}))
  fields = config_fields(cls)
  known = {f.name for f in fields}
  unknown = sorted(set(args) - known)
  if unknown:
    raise ModelConfigError(f"{name}: unknown config field(s) {unknown}; known: {sorted(known)}")
  missing = sorted(f.name for f in fields if f.default is dataclasses.MISSING and f.name not in args)
  if missing:
    raise ModelConfigError(f"{name}: missing required config field(s) {missing}")
  args = {k: tuple(v) if isinstance(v, list) else FrozenDict(v) if isinstance(v, Mapping) else v
          for k, v in args.items()}
  return cls(**args, dtype=jnp.float32 if dtype is None else dtype)


def model_config(model: nn.Module) -> dict[str, Any]:
  """Inverse of :func:`build_model`: the ``{"name", "args"}`` dict (tuples as lists, mappings as dicts, as
  in json)."""
  args = {f.name: getattr(model, f.name) for f in config_fields(type(model))}
  return {"name": type(model).__name__,
          "args": {k: list(v) if isinstance(v, tuple) else _plain_dict(v) if isinstance(v, Mapping) else v
                   for k, v in args.items()}}


def _plain_dict(mapping: Mapping) -> dict:
  return {k: _plain_dict(v) if isinstance(v, Mapping) else v for k, v in mapping.items()}


def init_params(model: nn.Module, rng) -> dict[str, Any]:
  """Fresh float32 params of ``model`` (under ``jax.eval_shape`` for shapes only)."""
  return model.init(rng, *model.example_inputs())["params"]


Velocity = Callable[[Any, Any, Any, Any], Any]


def velocity(model: nn.Module) -> Velocity:
  """The flow model as the velocity field every sampler and objective calls:
  ``(params, x, t [B], cond [B, L, C]) -> v`` shaped like ``x`` (a dense array or a SparseTensor)."""
  def apply(params, x, t, cond):
    return model.apply({"params": params}, x, t, cond)
  return apply
