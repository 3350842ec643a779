"""Reading and validating a TRELLIS dataset root, as TRELLIS's dataset toolkit writes it.

  <root>/metadata.csv                               column `sha256`; optional `aesthetic_score`,
                                                    `captions` (a JSON list), `cond_rendered`,
                                                    `ss_latent_<model>`, `latent_<model>`, ...
  <root>/ss_latents/<model>/<sha256>.npz            `mean`: float32 [8, 16, 16, 16], channel-first
  <root>/latents/<model>/<sha256>.npz               `feats`: float32 [N, 8]; `coords`: int [N, 3]
                                                    in [0, 64)
  <root>/renders_cond/<sha256>/transforms.json      `frames[i].file_path`: RGBA PNGs beside it

Every loader validates what it reads and raises `BadDataError`, which names the instance's sha256,
the file and a short `reason` (one of REASONS), so a broken record can be traced and counted.
"""
import csv
import json
import os
import zipfile

import numpy as np

SS_LATENT_SHAPE = (8, 16, 16, 16)
SLAT_CHANNELS = 8
SLAT_RESOLUTION = 64
REASONS = ("missing file", "unreadable file", "missing key", "wrong dtype", "wrong shape",
           "non-finite value", "coordinate out of range", "duplicate coordinate", "no voxels",
           "no views")


class BadDataError(ValueError):
  """A record that cannot be used: `sha256`, `path` (the file) and `reason` (one of REASONS)."""

  def __init__(self, sha256, path, reason, detail=""):
    self.sha256, self.path, self.reason = sha256, str(path), reason
    super().__init__(f"bad data for instance {sha256}: {path}: {reason}"
                     + (f" ({detail})" if detail else ""))


def read_metadata(root):
  """Rows of `<root>/metadata.csv` as dicts of strings, in file order."""
  path = os.path.join(root, "metadata.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no metadata.csv in the TRELLIS dataset root {root!r}")
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  if rows and "sha256" not in rows[0]:
    raise ValueError(f"{path} has no sha256 column (columns: {sorted(rows[0])})")
  return rows


def is_true(value):
  """A metadata boolean cell ('True', 'true', '1', 'yes') -> bool; empty or other -> False."""
  return str(value).strip().lower() in ("true", "1", "1.0", "yes")


def ss_latent_path(root, model, sha256):
  return os.path.join(root, "ss_latents", model, f"{sha256}.npz")


def slat_path(root, model, sha256):
  return os.path.join(root, "latents", model, f"{sha256}.npz")


def views_dir(root, sha256):
  return os.path.join(root, "renders_cond", sha256)


def _load_npz(sha256, path, keys):
  if not os.path.exists(path):
    raise BadDataError(sha256, path, "missing file")
  try:
    npz = np.load(path, allow_pickle=False)
    if not isinstance(npz, np.lib.npyio.NpzFile):
      raise ValueError(f"not an npz archive but a {type(npz).__name__}")
    with npz:
      files = npz.files
      arrays = {k: npz[k] for k in keys if k in files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise BadDataError(sha256, path, "unreadable file", str(e)) from e
  missing = [k for k in keys if k not in arrays]
  if missing:
    raise BadDataError(sha256, path, "missing key", f"no {missing} among {files}")
  return [arrays[k] for k in keys]


def _check(sha256, path, array, name, shape, dtype_ok, dtype_text):
  if not dtype_ok(array.dtype):
    raise BadDataError(sha256, path, "wrong dtype", f"{name} is {array.dtype}, expected {dtype_text}")
  if len(shape) != array.ndim or any(s is not None and s != a for s, a in zip(shape, array.shape)):
    raise BadDataError(sha256, path, "wrong shape", f"{name} is {list(array.shape)}, expected "
                       f"{['N' if s is None else s for s in shape]}")


def load_ss_latent(root, model, sha256):
  """The SS latent, validated: float32 [16, 16, 16, 8] channels-last (the file is channel-first)."""
  path = ss_latent_path(root, model, sha256)
  (mean,) = _load_npz(sha256, path, ["mean"])
  _check(sha256, path, mean, "mean", SS_LATENT_SHAPE, lambda d: d == np.float32, "float32")
  if not np.all(np.isfinite(mean)):
    raise BadDataError(sha256, path, "non-finite value", f"{np.sum(~np.isfinite(mean))} in mean")
  return np.ascontiguousarray(np.moveaxis(mean, 0, -1))


def load_slat(root, model, sha256, resolution=SLAT_RESOLUTION):
  """The SLat, validated: coords int32 [N, 3] in [0, resolution), unique; feats float32 [N, 8]."""
  path = slat_path(root, model, sha256)
  feats, coords = _load_npz(sha256, path, ["feats", "coords"])
  _check(sha256, path, feats, "feats", (None, SLAT_CHANNELS), lambda d: d == np.float32, "float32")
  _check(sha256, path, coords, "coords", (len(feats), 3), lambda d: np.issubdtype(d, np.integer),
         "an integer type")
  if not len(feats):
    raise BadDataError(sha256, path, "no voxels")
  if not np.all(np.isfinite(feats)):
    raise BadDataError(sha256, path, "non-finite value", f"{np.sum(~np.isfinite(feats))} in feats")
  if coords.min() < 0 or coords.max() >= resolution:
    raise BadDataError(sha256, path, "coordinate out of range",
                       f"coords span [{coords.min()}, {coords.max()}], grid is [0, {resolution})")
  coords = coords.astype(np.int32)
  if len(np.unique(coords, axis=0)) != len(coords):
    raise BadDataError(sha256, path, "duplicate coordinate")
  return coords, feats


def load_view_files(root, sha256):
  """Condition views of an instance: file paths relative to `renders_cond/<sha256>/`, validated to exist."""
  path = os.path.join(views_dir(root, sha256), "transforms.json")
  if not os.path.exists(path):
    raise BadDataError(sha256, path, "missing file")
  try:
    with open(path) as f:
      frames = json.load(f)["frames"]
    files = [frame["file_path"] for frame in frames]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise BadDataError(sha256, path, "unreadable file", repr(e)) from e
  if not files:
    raise BadDataError(sha256, path, "no views")
  for name in files:
    if not os.path.exists(os.path.join(views_dir(root, sha256), name)):
      raise BadDataError(sha256, os.path.join(views_dir(root, sha256), name), "missing file")
  return files
