"""A triangle mesh with vertex colours as a binary glTF 2.0 file (``.glb``), the format of
``sample_<i>_mesh.glb``. One mesh, one primitive: ``POSITION`` (float32), ``COLOR_0`` (float32 RGB, shown
through the default material) and uint32 indices. Positions are turned from TRELLIS's z-up frame to glTF's
y-up frame by ``transform`` (default :data:`mdt_jax.representations.ply.Z_UP_TO_Y_UP`)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from mdt_jax.representations.ply import Z_UP_TO_Y_UP

_FLOAT, _UINT = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def write_mesh_glb(path, vertices, faces, vertex_colors=None, transform=Z_UP_TO_Y_UP):
  """vertices [V, 3], faces [F, 3] int (counter-clockwise from outside), vertex_colors [V, 3] in [0, 1]
  or None -> ``path``. ValueError naming a face index out of range or non-finite vertices."""
  vertices = np.asarray(vertices, np.float64) @ np.asarray(transform, np.float64).T
  faces = np.asarray(faces, np.int64)
  if not np.all(np.isfinite(vertices)):
    raise ValueError("write_mesh_glb: non-finite vertices: not written")
  if faces.size and (faces.min() < 0 or faces.max() >= len(vertices)):
    raise ValueError(f"write_mesh_glb: face indices must lie in [0, {len(vertices)}), got "
                     f"[{faces.min()}, {faces.max()}]")
  blobs = [vertices.astype("<f4"), faces.astype("<u4").reshape(-1)]
  if vertex_colors is not None:
    blobs.insert(1, np.clip(np.asarray(vertex_colors, np.float64), 0, 1).astype("<f4"))
  views, accessors, offset = [], [], 0
  for i, blob in enumerate(blobs):
    is_index = i == len(blobs) - 1
    views.append({"buffer": 0, "byteOffset": offset, "byteLength": blob.nbytes,
                  "target": _ELEMENT_ARRAY_BUFFER if is_index else _ARRAY_BUFFER})
    accessor = {"bufferView": i, "componentType": _UINT if is_index else _FLOAT,
                "count": int(blob.shape[0]), "type": "SCALAR" if is_index else "VEC3"}
    if i == 0:
      accessor.update(min=blob.min(0).tolist() if len(blob) else [0, 0, 0],
                      max=blob.max(0).tolist() if len(blob) else [0, 0, 0])
    accessors.append(accessor)
    offset += blob.nbytes                                               # every blob is a multiple of 4 bytes
  attributes = {"POSITION": 0, **({"COLOR_0": 1} if vertex_colors is not None else {})}
  gltf = {"asset": {"version": "2.0", "generator": "mdt-jax"}, "scene": 0, "scenes": [{"nodes": [0]}],
          "nodes": [{"mesh": 0}], "meshes": [{"primitives": [{"attributes": attributes, "indices": len(blobs) - 1}]}],
          "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": offset}]}
  text = json.dumps(gltf, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 4)
  binary = b"".join(b.tobytes() for b in blobs)
  chunks = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
  Path(path).write_bytes(struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks)


def read_mesh_glb(path) -> dict[str, np.ndarray]:
  """Reads a file of :func:`write_mesh_glb` -> ``vertices`` [V, 3], ``faces`` [F, 3] and, if present,
  ``vertex_colors`` [V, 3], in the file's (y-up) frame."""
  data = Path(path).read_bytes()
  magic, version, _ = struct.unpack_from("<III", data, 0)
  if magic != 0x46546C67 or version != 2:
    raise ValueError(f"{path}: not a glTF 2.0 binary file")
  json_len, _ = struct.unpack_from("<II", data, 12)
  gltf = json.loads(data[20:20 + json_len])
  binary = data[20 + json_len + 8:]

  def accessor(i):
    a = gltf["accessors"][i]
    view = gltf["bufferViews"][a["bufferView"]]
    dtype, width = ("<u4", 1) if a["componentType"] == _UINT else ("<f4", 3)
    return np.frombuffer(binary, dtype, count=a["count"] * width, offset=view["byteOffset"]).reshape(a["count"], -1)

  primitive = gltf["meshes"][0]["primitives"][0]
  out = {"vertices": accessor(primitive["attributes"]["POSITION"]), "faces": accessor(primitive["indices"]).reshape(-1, 3)}
  if "COLOR_0" in primitive["attributes"]:
    out["vertex_colors"] = accessor(primitive["attributes"]["COLOR_0"])
  return out
