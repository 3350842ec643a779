"""Writes a tiny TRELLIS-layout dataset root (trellis_layout describes it) for tests.

Good instances have an SS latent, a SLat latent, two RGBA condition views and metadata that passes
every filter. `BROKEN` instances each carry one defect that the builders must report (or skip and
count); `FILTERED` instances fail one filter and must be left out silently (and counted).
"""
import csv
import hashlib
import json
import os

import numpy as np
from PIL import Image

SS_MODEL = "ss_test_enc"
SLAT_MODEL = "slat_test_enc"
# kind -> (the stage whose build sees it, the BadDataError reason, the file that is broken)
BROKEN = {
    "ss_missing": ("ss", "missing file", "ss"),
    "ss_wrong_shape": ("ss", "wrong shape", "ss"),
    "ss_wrong_dtype": ("ss", "wrong dtype", "ss"),
    "ss_nan": ("ss", "non-finite value", "ss"),
    "ss_not_npz": ("ss", "unreadable file", "ss"),
    "slat_missing": ("slat", "missing file", "slat"),
    "slat_missing_key": ("slat", "missing key", "slat"),
    "slat_wrong_shape": ("slat", "wrong shape", "slat"),
    "slat_wrong_dtype": ("slat", "wrong dtype", "slat"),
    "slat_nan": ("slat", "non-finite value", "slat"),
    "slat_out_of_range": ("slat", "coordinate out of range", "slat"),
    "slat_duplicate": ("slat", "duplicate coordinate", "slat"),
    "views_missing": ("both", "missing file", "views"),
    "metadata_unparsable": ("both", "unreadable file", "metadata"),
}
# kind -> the filter that drops it (max_num_voxels needs a build with max_num_voxels < 100).
FILTERED = {"low_aesthetic": "aesthetic_score", "not_rendered": "cond_rendered",
            "too_many_voxels": "max_num_voxels", "not_encoded": "latent column"}


def instance_sha256(name):
  return hashlib.sha256(name.encode()).hexdigest()


def _write_views(root, sha256, rng):
  folder = os.path.join(root, "renders_cond", sha256)
  os.makedirs(folder, exist_ok=True)
  frames = []
  for v in range(2):
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 256, (40, 40, 3))
    rgba[8 + v:30, 10:28 + v, 3] = 255
    Image.fromarray(rgba, "RGBA").save(os.path.join(folder, f"{v:03d}.png"))
    frames.append({"file_path": f"{v:03d}.png"})
  with open(os.path.join(folder, "transforms.json"), "w") as f:
    json.dump({"frames": frames}, f)


def _slat(rng, n):
  flat = rng.choice(64 ** 3, n, replace=False)
  coords = np.stack(np.unravel_index(np.sort(flat), (64, 64, 64)), -1).astype(np.int32)
  return coords, rng.standard_normal((n, 8)).astype(np.float32)


def write_tiny_trellis_dataset(root, num_good=4, broken=tuple(BROKEN), filtered=tuple(FILTERED),
                               seed=0):
  """Writes the root; returns {"good": [sha256], "broken": {kind: sha256}, "filtered": {kind: sha256}}.

  Metadata rows: the good instances first, then the broken ones, then the filtered ones.
  Good SLat instances have 20-60 voxels; `too_many_voxels` has 100.
  """
  rng = np.random.default_rng(seed)
  names = ([("good", f"good-{i}") for i in range(num_good)] + [(k, k) for k in broken]
           + [(k, k) for k in filtered])
  out = {"good": [], "broken": {}, "filtered": {}}
  rows = []
  for kind, name in names:
    sha = instance_sha256(name)
    ss = rng.standard_normal((8, 16, 16, 16)).astype(np.float32)
    coords, feats = _slat(rng, 100 if kind == "too_many_voxels" else int(rng.integers(20, 61)))
    slat = {"feats": feats, "coords": coords}
    if kind == "ss_wrong_shape":
      ss = ss[:, :8]
    elif kind == "ss_wrong_dtype":
      ss = ss.astype(np.float64)
    elif kind == "ss_nan":
      ss[3, 1, 2, 3] = np.nan
    elif kind == "slat_missing_key":
      del slat["coords"]
    elif kind == "slat_wrong_shape":
      slat["feats"] = feats[:, :7]
    elif kind == "slat_wrong_dtype":
      slat["feats"] = feats.astype(np.float64)
    elif kind == "slat_nan":
      slat["feats"][1, 2] = np.nan
    elif kind == "slat_out_of_range":
      slat["coords"][0, 1] = 64
    elif kind == "slat_duplicate":
      slat["coords"][1] = slat["coords"][0]
    for sub, model in (("ss_latents", SS_MODEL), ("latents", SLAT_MODEL)):
      os.makedirs(os.path.join(root, sub, model), exist_ok=True)
    ss_file = os.path.join(root, "ss_latents", SS_MODEL, f"{sha}.npz")
    if kind == "ss_not_npz":
      with open(ss_file, "wb") as f:
        f.write(b"not an npz archive")
    elif kind != "ss_missing":
      np.savez(ss_file, mean=ss)
    if kind != "slat_missing":
      np.savez(os.path.join(root, "latents", SLAT_MODEL, f"{sha}.npz"), **slat)
    if kind not in ("views_missing", "not_rendered"):
      _write_views(root, sha, rng)
    rows.append({
        "sha256": sha,
        "aesthetic_score": {"low_aesthetic": 3.0, "metadata_unparsable": "high"}.get(kind, 5.5),
        "captions": json.dumps([f"a {name} object", f"the {name} thing"]),
        "cond_rendered": kind != "not_rendered",
        f"ss_latent_{SS_MODEL}": kind != "not_encoded", f"latent_{SLAT_MODEL}": kind != "not_encoded",
        "num_voxels": len(coords),
    })
    if kind == "good":
      out["good"].append(sha)
    elif kind in BROKEN:
      out["broken"][kind] = sha
    else:
      out["filtered"][kind] = sha
  with open(os.path.join(root, "metadata.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  return out
