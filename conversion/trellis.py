"""TRELLIS models' checkpoints on disk: TRELLIS's own format (``NAME.json`` + ``NAME.safetensors``)
and ours (an orbax directory of ``params`` + the same json ``config``), read and written strictly.

    model, params = load_checkpoint("path/to/ss_flow_img_dit_L_16l8_fp16")
    v = model.apply({"params": params}, x, t, cond)
    save_checkpoint("out/stem", model, params)   # model_config: the module or a {"name", "args"} dict
    model, params = load_model(path)             # either format: the one loader of every entry point

TRELLIS.2 files (same class names, other config fields) go through the same functions: the family
is told from the config's fields (``registry.detect_family``) or forced with ``family=``.

What a model is (its class, config fields, init) is ``mdt_jax.models.registry``'s; this module only
translates: per TRELLIS class one row of :data:`TABLES` says how its ``weight`` tensors' axes map
(:mod:`conversion.common`'s structural key map does the rest). ``params_to_state_dict`` /
``state_dict_to_params`` apply it to any pytree shaped like the params (gradients too).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from conversion import common
from conversion.common import ConversionError, read_json
from mdt_jax.models import registry
from mdt_jax.models.registry import build_model, init_params, model_config  # noqa: F401  (this module's API)


@dataclasses.dataclass(frozen=True)
class Table:
  """How one TRELLIS class's tensors translate. ``weights``: (key suffix, ndim, layout) rules for the
  ``weight`` tensors, first match wins; any other weight takes ``common.default_weight_layout``.
  ``stacked``: modules whose params are stacked [N, ...] (blocks under ``nn.scan``), stored as TRELLIS's
  ``name.{i}.*`` keys."""
  weights: tuple[tuple[str, int, common.Layout], ...] = ()
  stacked: tuple[str, ...] = ()

  def to_trellis_tree(self, tree):
    """Our param tree -> TRELLIS's module tree (stacked modules unstacked); the layout is unchanged."""
    for name in self.stacked:
      tree = common.unstack(tree, name)
    return tree

  def from_trellis_tree(self, tree):
    """Inverse of :meth:`to_trellis_tree`."""
    for name in self.stacked:
      tree = common.stack(tree, name)
    return tree

  def weight_layout(self, torch_key: str, ndim: int) -> common.Layout:
    for suffix, rule_ndim, layout in self.weights:
      if ndim == rule_ndim and torch_key.endswith(suffix):
        return layout
    return common.default_weight_layout(torch_key, ndim)


_SLAT = Table(weights=((".conv.weight", 5, common.SPARSE_CONV3D),),  # spconv kernels [out, 3, 3, 3, in]
              stacked=("blocks",))
# The SLat VAE: the 1x1x1 skip convs of the mesh decoder's subdivision blocks are read as spconv computes
# them (memory viewed as [in, out]), matched in both directions (5-D on disk, 2-D in our params).
_SLAT_VAE = Table(weights=((".skip_connection.conv.weight", 5, common.SPARSE_CONV1),
                           (".skip_connection.conv.weight", 2, common.SPARSE_CONV1),
                           (".conv.weight", 5, common.SPARSE_CONV3D)),
                  stacked=("blocks",))
TABLES: dict[str, Table] = {
    "SparseStructureFlowModel": Table(stacked=("blocks",)),
    "SLatFlowModel": _SLAT,
    "ElasticSLatFlowModel": _SLAT,
    "SparseStructureDecoder": Table(),
    **{f"{elastic}SLat{kind}": _SLAT_VAE for elastic in ("", "Elastic")
       for kind in ("GaussianDecoder", "RadianceFieldDecoder", "MeshDecoder", "Encoder")},
}
TRELLIS2_TABLES: dict[str, Table] = {name: Table(stacked=("blocks",)) for name in registry.TRELLIS2_MODELS}
assert set(TABLES) == set(registry.MODELS), "every registered model needs a conversion table"


def table(model) -> Table:
  return (TRELLIS2_TABLES if registry.family_of(model) == "trellis2" else TABLES)[type(model).__name__]


def _build(config: Mapping[str, Any], source: str, *, dtype=None, family=None):
  """registry.build_model, its config errors naming the file they came from."""
  try:
    return build_model(config, dtype=dtype, family=family)
  except registry.ModelConfigError as e:
    raise ConversionError(f"{source}: {e}") from e


def _as_model(model_or_config):
  return _build(model_or_config, "model config") if isinstance(model_or_config, Mapping) else model_or_config


def expected_shapes(model) -> dict[str, tuple[int, ...]]:
  """TRELLIS state-dict names and shapes of ``model``, via ``jax.eval_shape`` (no memory)."""
  abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
  return common.tree_to_state_dict_shapes(table(model).to_trellis_tree(abstract), table(model).weight_layout)


def params_to_state_dict(model, tree) -> dict[str, np.ndarray]:
  """Flax params (or grads, or any tree shaped like them) -> ``{trellis_key: np.ndarray}``."""
  tree = table(model).to_trellis_tree(jax.device_get(tree))
  return common.tree_to_state_dict(tree, table(model).weight_layout)


def _drop_recomputed_buffers(model, state_dict, source: str):
  """Upstream buffers that are a function of the config (TRELLIS.2's ``rope_phases``): checked for
  shape when present, then dropped."""
  buffers = getattr(model, "recomputed_buffers", dict)()
  for key, shape in buffers.items():
    if key in state_dict and tuple(np.shape(state_dict[key])) != shape:
      raise ConversionError(f"{source}: shape mismatch for buffer {key!r}: checkpoint "
                            f"{tuple(np.shape(state_dict[key]))}, model {shape}")
  return {k: v for k, v in state_dict.items() if k not in buffers}


def state_dict_to_params(model, state_dict: Mapping[str, np.ndarray], *, source: str = "state dict"):
  """Strictly checked ``{trellis_key: array}`` -> float32 Flax params for ``model``."""
  state_dict = _drop_recomputed_buffers(model, state_dict, source)
  common.check_state_dict(expected_shapes(model), state_dict, source)
  tree = table(model).from_trellis_tree(common.state_dict_to_tree(state_dict, table(model).weight_layout))
  params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a, np.float32)), tree)
  check = getattr(model, "check_params", None)
  if check is not None:
    check(params, source)
  return params


def read_config(stem: str | Path) -> dict[str, Any]:
  path = Path(str(stem) + ".json")
  config = read_json(path, "checkpoint config")
  if not isinstance(config, dict) or "name" not in config:
    raise ConversionError(f"{path}: expected an object with 'name' and 'args'")
  return config


def _stem(path: str | Path) -> Path:
  return Path(str(path).removesuffix(".json").removesuffix(".safetensors"))


def load_checkpoint(stem: str | Path, *, dtype=None, family: str | None = None):
  """Reads ``stem.json`` + ``stem.safetensors`` -> ``(model, params)``, TRELLIS and TRELLIS.2 alike.

  Params are float32 whatever the file stores; ``dtype`` is the compute dtype of the model's
  trunk (float32 unless ``jnp.bfloat16``/``jnp.float16`` is asked for; for TRELLIS.2 the config's
  ``dtype`` by default). ``family`` ("trellis", "trellis2") forces the family the config's fields
  would tell (``registry.detect_family``).
  """
  stem = _stem(stem)
  model = _build(read_config(stem), f"{stem}.json", dtype=dtype, family=family)
  weights = Path(str(stem) + ".safetensors")
  params = state_dict_to_params(model, common.read_safetensors(weights), source=str(weights))
  return model, params


def save_checkpoint(path: str | Path, model_config_or_model, params, *, storage_dtype=None):
  """Writes ``path.json`` + ``path.safetensors`` in TRELLIS's format.

  Every tensor is float16 when the config has ``use_fp16`` (TRELLIS), of the config's ``dtype``
  (TRELLIS.2), else float32, unless ``storage_dtype`` says otherwise (the toy teachers are stored as
  float16 and computed in float32). TRELLIS.2's recomputed ``rope_phases`` is not written (its
  loader tolerates the absence). Both files are written atomically; nothing is written if the
  params do not fit the model.
  """
  model = _as_model(model_config_or_model)
  config = model_config(model)
  stem = _stem(path)
  state_dict = params_to_state_dict(model, params)
  common.check_state_dict(expected_shapes(model), state_dict, f"params for {stem}")
  dtype = storage_dtype or (np.float16 if config["args"].get("use_fp16") else
                            jnp.bfloat16 if config["args"].get("dtype") == "bfloat16" else
                            np.float16 if config["args"].get("dtype") == "float16" else np.float32)
  state_dict = {k: np.asarray(v).astype(dtype) for k, v in state_dict.items()}
  common.write_safetensors(Path(str(stem) + ".safetensors"), state_dict)
  common.atomic_write(Path(str(stem) + ".json"),
                      lambda tmp: Path(tmp).write_text(json.dumps(config, indent=4)))


def _checkpointer():
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_flax_checkpoint(directory: str | Path, model, params, *, overwrite: bool = False):
  """Writes params (float32) and the model's TRELLIS config as an orbax directory. An existing
  ``directory`` is refused (FileExistsError), or with ``overwrite`` replaced once the new one is complete."""
  directory = Path(directory).absolute()
  if directory.exists() and not overwrite:
    raise FileExistsError(f"{directory} exists; refusing to overwrite it (--overwrite replaces it)")
  args = ocp.args.Composite(params=ocp.args.StandardSave(params), config=ocp.args.JsonSave(model_config(model)))
  common.replace_directory(lambda tmp: _checkpointer().save(tmp, args), directory)


def load_flax_checkpoint(directory: str | Path, *, dtype=None):
  """-> ``(model, params)`` from a directory written by :func:`save_flax_checkpoint`."""
  directory = Path(directory).absolute()
  if not (directory / "params").is_dir() or not (directory / "config").exists():
    raise FileNotFoundError(f"not a converted Flax checkpoint (needs params/ and config): {directory}")
  checkpointer = _checkpointer()
  config = checkpointer.restore(directory, ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  model = _build(config, str(directory / "config"), dtype=dtype)
  abstract = jax.eval_shape(lambda: init_params(model, jax.random.key(0)))
  restored = checkpointer.restore(directory, ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
  return model, restored["params"]


def load_model(path: str | Path, *, dtype=None):
  """``(model, params)`` from a TRELLIS stem (``path.json`` + ``.safetensors``) or an orbax directory
  (:func:`save_flax_checkpoint`, ``conversion.trellis_to_flax``); FileNotFoundError if neither."""
  if Path(f"{_stem(path)}.json").is_file():
    return load_checkpoint(path, dtype=dtype)
  if Path(path).is_dir():
    return load_flax_checkpoint(path, dtype=dtype)
  raise FileNotFoundError(f"checkpoint not found: {path} (neither {path}.json + .safetensors nor an orbax "
                          f"directory)")
