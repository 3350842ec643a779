"""The models by TRELLIS class name: build one from its ``{"name", "args"}`` config, read a module's
config back, initialise its params, and call it as a velocity field.

    model = build_model({"name": "SparseStructureFlowModel", "args": {...}}, dtype=jnp.bfloat16)
    params = init_params(model, jax.random.key(0))          # float32
    v = velocity(model)(params, x, t, cond)                  # the flows' apply(params, x, t, cond)

A model's config fields are its Flax fields (TRELLIS's constructor arguments, with their defaults),
except ``dtype``, the compute dtype, which is the caller's choice; TRELLIS.2's configs carry it as
their own ``dtype`` string, which sets the compute dtype unless the caller asks for another.
``conversion`` reads and writes files of these configs; nothing here knows a file format.

Families: TRELLIS.2 reuses TRELLIS's class names with other constructor arguments. A config's
family is told by its fields (those only one family has: :func:`detect_family`); where they do not
tell, or a config mixes both, ``AmbiguousFamilyError`` says so, and ``family=`` forces one.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax.numpy as jnp
from flax.core import FrozenDict

from mdt_jax.models import trellis2_slat_flow, trellis2_ss_flow
from mdt_jax.models.slat_decoders import DECODERS
from mdt_jax.models.slat_flow import ElasticSLatFlowModel, SLatFlowModel
from mdt_jax.models.ss_decoder import SparseStructureDecoder
from mdt_jax.models.ss_flow import SparseStructureFlowModel

MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    SparseStructureFlowModel, SLatFlowModel, ElasticSLatFlowModel, SparseStructureDecoder) + DECODERS}
TRELLIS2_MODELS: dict[str, type[nn.Module]] = {cls.__name__: cls for cls in (
    trellis2_ss_flow.SparseStructureFlowModel, trellis2_slat_flow.SLatFlowModel,
    trellis2_slat_flow.ElasticSLatFlowModel)}
FAMILIES: dict[str, dict[str, type[nn.Module]]] = {"trellis": MODELS, "trellis2": TRELLIS2_MODELS}
_NOT_ARGS = ("dtype", "parent", "name")
_DTYPES = ("float32", "bfloat16", "float16")


class ModelConfigError(ValueError):
  """A model config names an unknown class, an unknown field, or misses a required one."""


class AmbiguousFamilyError(ModelConfigError):
  """A config's fields do not tell TRELLIS from TRELLIS.2 (or mix both)."""


def family_of(model_or_cls) -> str:
  """"trellis" or "trellis2": the family of a model (instance or class)."""
  cls = model_or_cls if isinstance(model_or_cls, type) else type(model_or_cls)
  return getattr(cls, "family", "trellis")


def _arg_names(cls) -> set[str]:
  return {f.name for f in config_fields(cls)} | ({"dtype"} if getattr(cls, "dtype_in_config", False) else set())


def detect_family(name: str, args: Mapping[str, Any]) -> str:
  """The family of a ``{"name": name, "args": args}`` config: the one whose class of that name has
  fields the other's lacks among ``args``. ModelConfigError for an unknown class; AmbiguousFamilyError
  when ``args`` hold such fields of neither family, or of both."""
  candidates = [family for family, models in FAMILIES.items() if name in models]
  if not candidates:
    known = sorted({n for models in FAMILIES.values() for n in models})
    raise ModelConfigError(f"unknown TRELLIS model class {name!r}; known: {known}")
  if len(candidates) == 1:
    return candidates[0]
  fields = {family: _arg_names(FAMILIES[family][name]) for family in candidates}
  own = {family: sorted(set(args) & (fields[family] - set().union(*(fields[f] for f in candidates if f != family))))
         for family in candidates}
  found = [family for family in candidates if own[family]]
  if len(found) == 1:
    return found[0]
  telling = {family: sorted(fields[family] - set().union(*(fields[f] for f in candidates if f != family)))
             for family in candidates}
  what = f"has fields of both families ({own})" if found else "has no field that only one family has"
  raise AmbiguousFamilyError(f"{name}: the config {what}; fields only TRELLIS has: {telling['trellis']}, only "
                             f"TRELLIS.2: {telling['trellis2']}; pass family='trellis' or family='trellis2'")


def model_class(name: str, family: str = "trellis") -> type[nn.Module]:
  """Our module class for a class name of ``family`` (ModelConfigError naming the known ones otherwise)."""
  if family not in FAMILIES:
    raise ModelConfigError(f"unknown model family {family!r}; known: {sorted(FAMILIES)}")
  if name not in FAMILIES[family]:
    raise ModelConfigError(f"unknown {family} model class {name!r}; known: {sorted(FAMILIES[family])}")
  return FAMILIES[family][name]


def config_fields(cls: type[nn.Module]) -> list[dataclasses.Field]:
  """The config fields of a model class (its Flax fields less ``dtype``), defaults included."""
  return [f for f in dataclasses.fields(cls) if f.name not in _NOT_ARGS]


def build_model(config: Mapping[str, Any], *, dtype=None, family: str | None = None) -> nn.Module:
  """``{"name": class, "args": {...}}`` -> a module computing in ``dtype`` (float32 default; for
  TRELLIS.2, the config's ``dtype`` unless one is given). ``family`` ("trellis", "trellis2")
  forces the family; by default :func:`detect_family` tells it.

  Lists become tuples and dicts FrozenDicts (hashable fields). Unknown or missing fields raise ModelConfigError naming them.
  """
  name = config.get("name")
  args = dict(config.get("args", {}))
  cls = model_class(name, family or detect_family(name, args))
  if getattr(cls, "dtype_in_config", False):
    stored = args.pop("dtype", "float32")
    if stored not in _DTYPES:
      raise ModelConfigError(f"{name}: config field 'dtype' must be one of {list(_DTYPES)}, got {stored!r}")
    dtype = dtype if dtype is not None else jnp.dtype(stored)
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
  if getattr(model, "dtype_in_config", False):
    args["dtype"] = jnp.dtype(model.dtype).name
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
  ``(params, x, t [B], cond [B, L, C], **kwargs) -> v`` shaped like ``x`` (a dense array or a
  SparseTensor); ``kwargs`` go to the model (TRELLIS.2's texture flow: ``concat_cond``)."""
  def apply(params, x, t, cond, **kwargs):
    return model.apply({"params": params}, x, t, cond, **kwargs)
  return apply
