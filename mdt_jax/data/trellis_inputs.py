"""TRELLIS-layout records (trellis_builder) -> model inputs, as `decode(record, rng)` for the pipeline.

  sha256      str (kept so that a bad batch can be traced)
  stage "ss":   x0  float32 [16, 16, 16, 8]
  stage "slat": coords int32 [N, 3], feats float32 [N, 8] (pair with pipeline.SparseCollate)
and the condition, one of (CONDITIONS):
  "image"   cond_image float32 [518, 518, 3]: one view drawn with `rng`, cropped and resized as
            docs/design.md, Image conditioning, states for training, by `load_view` (default:
            mdt_jax.data.image.preprocess_training_view); the DINOv2 encoder runs in the step.
  "tokens"  cond float16 [1374, 1024]: precomputed DINOv2 tokens of one view drawn with `rng`, from
            `<token_dir>/<sha256>/<view>.npy`, where <view> is the view's file name without extension.
  "text"    caption str: one of the instance's captions, drawn with `rng`.
  "none"    nothing.
"""
import dataclasses
import os
from typing import Callable

import numpy as np

from mdt_jax.data.trellis_layout import views_dir

CONDITIONS = ("image", "tokens", "text", "none")
TOKEN_SHAPE = (1374, 1024)


def _text(value):
  return value.decode() if isinstance(value, bytes) else str(value)


def _default_load_view(path):
  from mdt_jax.data.image import preprocess_training_view  # pylint: disable=g-import-not-at-top
  return preprocess_training_view(path)


@dataclasses.dataclass(frozen=True)
class TrellisInputs:
  """Decoder of TrellisLatents records with one kind of condition.

  root: the TRELLIS dataset root (views are read from root/renders_cond).
  token_dir: the precomputed tokens' directory (condition "tokens").
  load_view: path of an RGBA view -> float32 [518, 518, 3].
  """
  root: str
  condition: str = "image"
  token_dir: str | None = None
  load_view: Callable[[str], np.ndarray] = _default_load_view

  def __post_init__(self):
    if self.condition not in CONDITIONS:
      raise ValueError(f"condition must be one of {CONDITIONS}, got {self.condition!r}")
    if self.condition == "tokens" and not self.token_dir:
      raise ValueError("condition 'tokens' needs token_dir")

  def __call__(self, record, rng):
    sha256 = _text(record["sha256"])
    out = {"sha256": sha256}
    if "ss_latent" in record:
      out["x0"] = np.asarray(record["ss_latent"], np.float32)
    else:
      out["coords"] = np.asarray(record["coords"], np.int32)
      out["feats"] = np.asarray(record["feats"], np.float32)
    if self.condition in ("image", "tokens"):
      views = [_text(v) for v in record["views"]]
      if not views:
        raise ValueError(f"instance {sha256} has no condition views (build with require_cond_views)")
      view = views[rng.integers(len(views))]
      if self.condition == "image":
        out["cond_image"] = np.asarray(self.load_view(os.path.join(views_dir(self.root, sha256), view)),
                                       np.float32)
      else:
        out["cond"] = self._tokens(sha256, view)
    elif self.condition == "text":
      captions = [_text(c) for c in record["captions"]]
      if not captions:
        raise ValueError(f"instance {sha256} has no captions (build with require_captions)")
      out["caption"] = captions[rng.integers(len(captions))]
    return out

  def _tokens(self, sha256, view):
    path = os.path.join(self.token_dir, sha256, os.path.splitext(view)[0] + ".npy")
    if not os.path.exists(path):
      raise FileNotFoundError(f"instance {sha256}: no precomputed tokens at {path}")
    tokens = np.load(path)
    if tokens.shape != TOKEN_SHAPE or tokens.dtype != np.float16:
      raise ValueError(f"instance {sha256}: {path} holds {tokens.dtype} {list(tokens.shape)}, "
                       f"expected float16 {list(TOKEN_SHAPE)}")
    return tokens
