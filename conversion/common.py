"""Shared machinery for strict, two-way checkpoint conversion.

A PyTorch ``state_dict`` is flat: ``{"blocks.0.self_attn.to_qkv.weight": array}``. Our Flax modules
are named so that the param tree mirrors it one to one: a numeric path segment is joined to the
name before it (``blocks.0`` <-> ``blocks_0``, ``mlp.mlp.0`` <-> ``mlp/mlp_0``), and the leaf
``weight`` becomes ``kernel`` (ndim >= 2, value transformed by a layout) or ``scale`` (ndim 1, a
norm's affine weight). Everything else keeps its name and value. Each model supplies only a
``layout(torch_key, ndim) -> Layout`` hook for its ``weight`` tensors, so the key map of a model
is data, testable in one place, and applies to any pytree shaped like the params (gradients too).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np


class ConversionError(ValueError):
  """A checkpoint does not fit the model: the message names the key, field or file."""


def read_json(path: Path, what: str) -> Any:
  """The parsed json file at ``path`` (``what`` names it in the FileNotFoundError), or ConversionError
  naming the file when it is not valid json."""
  if not path.is_file():
    raise FileNotFoundError(f"{what} not found: {path}")
  try:
    return json.loads(path.read_text())
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ConversionError(f"{path}: not valid JSON ({e})") from e


@dataclasses.dataclass(frozen=True)
class Layout:
  """Axis permutation from a torch tensor to its Flax counterpart (and back)."""
  name: str
  to_flax_axes: tuple[int, ...] | None  # None: the same array

  def to_flax(self, array):
    return array if self.to_flax_axes is None else np.transpose(array, self.to_flax_axes)

  def to_torch(self, array):
    return array if self.to_flax_axes is None else np.transpose(array, np.argsort(self.to_flax_axes))

  def torch_shape(self, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.to_flax_axes is None:
      return tuple(flax_shape)
    return tuple(flax_shape[a] for a in np.argsort(self.to_flax_axes))


@dataclasses.dataclass(frozen=True)
class MemoryView(Layout):
  """A torch tensor whose memory is read as another shape (no transpose): spconv's kernel-volume-1 conv
  multiplies by its ``[out, 1, 1, 1, in]`` weight's memory viewed as ``[in, out]`` (decoder fixtures
  README, section 4). ``to_flax_axes`` is unused (None)."""

  def to_flax(self, array):
    return np.reshape(array, (array.shape[-1], array.shape[0]))

  def to_torch(self, array):
    return np.reshape(array, (array.shape[1], 1, 1, 1, array.shape[0]))

  def torch_shape(self, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    return (flax_shape[1], 1, 1, 1, flax_shape[0])


SAME = Layout("same", None)
LINEAR = Layout("linear [out, in] -> [in, out]", (1, 0))
CONV2D = Layout("conv2d [out, in, kH, kW] -> [kH, kW, in, out]", (2, 3, 1, 0))
CONV3D = Layout("conv3d [out, in, kD, kH, kW] -> [kD, kH, kW, in, out]", (2, 3, 4, 1, 0))
SPARSE_CONV3D = Layout("spconv [out, kD, kH, kW, in] -> [kD, kH, kW, in, out]", (1, 2, 3, 4, 0))
SPARSE_CONV1 = MemoryView("spconv 1x1x1 [out, 1, 1, 1, in] memory read as [in, out]", None)


def default_weight_layout(torch_key: str, ndim: int) -> Layout:
  """Linear weights are 2-D, dense conv weights 4-D/5-D in torch's channel-first layout."""
  del torch_key
  return {1: SAME, 2: LINEAR, 4: CONV2D, 5: CONV3D}[ndim]


WeightLayoutFn = Callable[[str, int], Layout]

_INDEXED = re.compile(r"^(.*)_(\d+)$")


def torch_key_to_path(key: str, ndim: int) -> tuple[str, ...]:
  """``blocks.0.norm2.weight`` (ndim 1) -> ``("blocks_0", "norm2", "scale")``."""
  parts: list[str] = []
  for part in key.split("."):
    if part.isdigit() and parts:
      parts[-1] = f"{parts[-1]}_{part}"
    else:
      parts.append(part)
  if parts[-1] == "weight":
    parts[-1] = "scale" if ndim == 1 else "kernel"
  return tuple(parts)


def path_to_torch_key(path: tuple[str, ...]) -> str:
  """Inverse of :func:`torch_key_to_path`."""
  parts = []
  for i, part in enumerate(path):
    if i == len(path) - 1 and part in ("kernel", "scale"):
      part = "weight"
    m = _INDEXED.match(part)
    parts.extend([m.group(1), m.group(2)] if m else [part])
  return ".".join(parts)


def flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def unstack(tree: Mapping[str, Any], name: str) -> dict[str, Any]:
  """``tree[name]`` with leaves [N, ...] (blocks under ``nn.scan``) -> ``tree[f"{name}_{i}"]``, i < N,
  TRELLIS's ``name.{i}.*`` layout. Leaves are arrays or ``jax.ShapeDtypeStruct``s."""
  tree = dict(tree)
  stacked = tree.pop(name)
  leaves = list(flatten(stacked).items())
  n = leaves[0][1].shape[0]
  take = lambda leaf, i: (leaf[i] if hasattr(leaf, "__getitem__")
                          else type(leaf)(leaf.shape[1:], leaf.dtype))  # ShapeDtypeStruct
  for i in range(n):
    tree[f"{name}_{i}"] = unflatten({path: take(leaf, i) for path, leaf in leaves})
  return tree


def stack(tree: Mapping[str, Any], name: str) -> dict[str, Any]:
  """Inverse of :func:`unstack`: ``tree[f"{name}_{i}"]`` for i = 0, 1, ... -> ``tree[name]`` [N, ...]."""
  tree = dict(tree)
  blocks = []
  while f"{name}_{len(blocks)}" in tree:
    blocks.append(flatten(tree.pop(f"{name}_{len(blocks)}")))
  tree[name] = unflatten({path: np.stack([b[path] for b in blocks]) for path in blocks[0]})
  return tree


def tree_to_state_dict(tree: Mapping[str, Any], weight_layout: WeightLayoutFn = default_weight_layout
                       ) -> dict[str, np.ndarray]:
  """Flax param tree (or any pytree shaped like it) -> flat torch-named dict of numpy arrays."""
  out = {}
  for path, value in flatten(tree).items():
    key = path_to_torch_key(path)
    value = np.asarray(value)
    if path[-1] == "kernel":
      value = weight_layout(key, value.ndim).to_torch(value)
    out[key] = value
  return out


def tree_to_state_dict_shapes(tree: Mapping[str, Any], weight_layout: WeightLayoutFn = default_weight_layout
                             ) -> dict[str, tuple[int, ...]]:
  """Like :func:`tree_to_state_dict` for a tree of shaped leaves (``jax.ShapeDtypeStruct``)."""
  out = {}
  for path, leaf in flatten(tree).items():
    key = path_to_torch_key(path)
    shape = tuple(leaf.shape)
    out[key] = weight_layout(key, len(shape)).torch_shape(shape) if path[-1] == "kernel" else shape
  return out


def state_dict_to_tree(state_dict: Mapping[str, np.ndarray],
                       weight_layout: WeightLayoutFn = default_weight_layout) -> dict[str, Any]:
  """Flat torch-named dict -> nested Flax tree (values still numpy, dtype unchanged)."""
  flat = {}
  for key, value in state_dict.items():
    value = np.asarray(value)
    path = torch_key_to_path(key, value.ndim)
    if path[-1] == "kernel":
      value = weight_layout(key, value.ndim).to_flax(value)
    flat[path] = value
  return unflatten(flat)


def check_state_dict(expected: Mapping[str, tuple[int, ...]], got: Mapping[str, np.ndarray], source: str):
  """Strict comparison of a state dict against the shapes a model expects.

  Raises ConversionError naming every missing key, unexpected key, shape mismatch (with both
  shapes) and non-float dtype, and the file or object they came from.
  """
  problems = []
  missing = sorted(set(expected) - set(got))
  unexpected = sorted(set(got) - set(expected))
  problems += [f"missing key {k!r} (expected shape {tuple(expected[k])})" for k in missing]
  problems += [f"unexpected key {k!r} (shape {tuple(np.shape(got[k]))})" for k in unexpected]
  for k in sorted(set(expected) & set(got)):
    shape = tuple(np.shape(got[k]))
    if shape != tuple(expected[k]):
      problems.append(f"shape mismatch for {k!r}: checkpoint {shape}, model {tuple(expected[k])}")
    dtype = np.asarray(got[k]).dtype
    if dtype.kind != "f" and dtype.name != "bfloat16":
      problems.append(f"dtype mismatch for {k!r}: checkpoint {dtype}, model expects a float tensor")
  if problems:
    head = f"{source}: {len(problems)} problem(s) with the state dict:\n  "
    raise ConversionError(head + "\n  ".join(problems))


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]):
  """Calls ``write(tmp_path)`` and renames the result onto ``path``: never a partial file."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  os.close(fd)
  try:
    write(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def replace_directory(write: Callable[[Path], None], directory: str | os.PathLike):
  """Calls ``write(tmp_dir)`` (a sibling path that does not exist yet) and moves the result onto
  ``directory``, replacing an existing one: never a partial directory under that name. The old one
  is renamed aside first and removed last; between the two renames (a moment) neither name holds it,
  and a process killed then leaves it as ``.<name>.old-<pid>``."""
  directory = Path(directory)
  directory.parent.mkdir(parents=True, exist_ok=True)
  tmp = directory.with_name(f".{directory.name}.partial-{os.getpid()}")
  old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    write(tmp)
    if directory.exists():
      os.rename(directory, old)
    os.rename(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every tensor of a safetensors file as numpy (bfloat16 as ``ml_dtypes.bfloat16``)."""
  from safetensors import safe_open
  path = Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"checkpoint weights not found: {path}")
  try:
    with safe_open(str(path), framework="numpy") as f:
      return {key: f.get_tensor(key) for key in f.keys()}
  except Exception as e:  # safetensors raises its own error types for corrupt headers
    raise ConversionError(f"{path}: not a readable safetensors file ({e})") from e


def write_safetensors(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]):
  from safetensors.numpy import save_file
  tensors = {k: np.ascontiguousarray(v) for k, v in state_dict.items()}
  atomic_write(path, lambda tmp: save_file(tensors, tmp))
