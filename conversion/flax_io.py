"""Our own checkpoint format for a converted model: an orbax directory with ``params`` + ``config``.

``config`` is the TRELLIS ``{"name", "args"}`` dict, so a directory is self-describing.
"""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from conversion import trellis
from conversion.common import replace_directory


def _checkpointer():
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def save_flax_checkpoint(directory: str | Path, model, params, *, overwrite: bool = False):
  """Writes params (float32) and the model's TRELLIS config. An existing ``directory`` is refused
  (FileExistsError), or with ``overwrite`` replaced once the new one is complete."""
  directory = Path(directory).absolute()
  if directory.exists() and not overwrite:
    raise FileExistsError(f"{directory} exists; refusing to overwrite it (--overwrite replaces it)")
  args = ocp.args.Composite(params=ocp.args.StandardSave(params),
                            config=ocp.args.JsonSave(trellis.model_config(model)))
  replace_directory(lambda tmp: _checkpointer().save(tmp, args), directory)


def load_flax_checkpoint(directory: str | Path, *, dtype=None):
  """-> ``(model, params)`` from a directory written by :func:`save_flax_checkpoint`."""
  directory = Path(directory).absolute()
  if not (directory / "params").is_dir() or not (directory / "config").exists():
    raise FileNotFoundError(f"not a converted Flax checkpoint (needs params/ and config): {directory}")
  checkpointer = _checkpointer()
  config = checkpointer.restore(directory, ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
  model = trellis.build_model(config, dtype=dtype)
  abstract = jax.eval_shape(lambda: trellis.init_params(model, jax.random.key(0)))
  restored = checkpointer.restore(directory, ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
  return model, restored["params"]
