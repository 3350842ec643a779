"""The device mesh and the one table of partitioning rules (params, optimizer state, batch).

Mesh axes: ``data`` (pure data parallel), ``fsdp`` (data parallel with sharded params and
optimizer state) and ``tensor`` (model parallel). A batch's leading axis is split over
(data, fsdp). A parameter is matched against RULES by its path (first match wins); each rule names
a mesh axis per array dimension, and an axis that does not divide its dimension is dropped, so
the same table serves every model size and mesh.
"""
from __future__ import annotations

import re

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (regex on the '/'-joined param path, spec per dimension). Dense kernels are [in, out]; the
# output projections of attention and MLP are split on their input (row-parallel), the rest on
# their output (column-parallel); fsdp takes the other dimension.
RULES: tuple[tuple[str, tuple], ...] = (
    (r".*/(to_out|mlp_2)/kernel$", ("tensor", "fsdp")),
    (r".*/kernel$", ("fsdp", "tensor")),           # dense [in, out]; conv kernels: trailing dims
    (r".*", ()),                                    # biases, norms, tables, scalars: replicated
)


def make_mesh(shape: dict, devices=None) -> Mesh:
  """``{"data": -1, "fsdp": 1, "tensor": 1}`` (-1: the remaining devices) -> Mesh with Auto axes."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  sizes = [int(shape.get(a, 1)) for a in AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one axis may be -1, got {dict(shape)}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if devices.size % known:
      raise ValueError(f"config.mesh {dict(shape)} does not divide {devices.size} devices")
    sizes[sizes.index(-1)] = devices.size // known
  if int(np.prod(sizes)) != devices.size:
    raise ValueError(f"config.mesh {dict(zip(AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"{devices.size} available")
  return Mesh(devices.reshape(sizes), AXES)


def _fit(spec: tuple, shape: tuple, mesh: Mesh) -> P:
  """Right-aligns ``spec`` to ``shape`` (kernels of convs have extra leading dims) and drops axes
  that do not divide their dimension."""
  spec = (None,) * (len(shape) - len(spec)) + tuple(spec[-len(shape):] if shape else ())
  return P(*[a if a is not None and dim % mesh.shape[a] == 0 else None for a, dim in zip(spec, shape)])


def param_spec(path: str, shape: tuple, mesh: Mesh) -> P:
  for pattern, spec in RULES:
    if re.fullmatch(pattern, path):
      return _fit(spec, shape, mesh)
  raise AssertionError("the last rule matches everything")


def _path_str(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def tree_shardings(tree, mesh: Mesh):
  """Shardings for any pytree of params or of things shaped like them (optimizer state, EMA)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: NamedSharding(mesh, param_spec(_path_str(path), tuple(np.shape(x)), mesh)), tree)


def gathered_shardings(tree, mesh: Mesh):
  """The shardings the networks compute with: as ``tree_shardings`` without the fsdp axis, i.e. the
  params all-gathered over fsdp (ZeRO-3) and still split over tensor. Constraining params to these
  inside the step keeps activations split over the batch axes; otherwise XLA may resolve the
  fsdp axis shared by a kernel's input dimension and the batch by gathering the activations."""
  drop = lambda spec: P(*[None if a == "fsdp" else a for a in spec])
  return jax.tree.map(lambda s: NamedSharding(mesh, drop(s.spec)), tree_shardings(tree, mesh))


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Leading (batch or per-device) axis over (data, fsdp); the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
