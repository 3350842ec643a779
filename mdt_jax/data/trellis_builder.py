"""TFDS builder `TrellisLatents`: one stage's latents of a TRELLIS dataset root, one record per instance.

  config = trellis_config(root, "slat", "dinov2_vitl14_reg_slat_enc_swin8_B_64l8_fp16",
                          min_aesthetic_score=4.5)
  builder = TrellisLatents(config=config, data_dir=...)
  builder.download_and_prepare(file_format="array_record")
  source = builder.as_data_source()["train"]

Records (split `train`, in metadata.csv order; trellis_layout describes the files):
  sha256           str, the instance (every record keeps it, so a bad one can be traced)
  views            [V] str, condition view files relative to renders_cond/<sha256>/ (empty unless
                   require_cond_views)
  captions         [K] str, from the `captions` column (may be empty)
  aesthetic_score  float32 (NaN when the column is absent)
  stage "ss":   ss_latent  float32 [16, 16, 16, 8] channels-last, normalised when configured
  stage "slat": coords     int32 [N, 3] in [0, 64);  feats float32 [N, 8], normalised per channel;
                num_voxels int32 N
Filters (a row that fails one is left out and counted, not an error): the metadata's
`ss_latent_<model>` / `latent_<model>` column when present, `min_aesthetic_score`,
`require_cond_views` (the `cond_rendered` column when present, then the views are read),
`require_captions`, and for SLat `max_num_voxels` per instance (TRELLIS's 32,768: a per-instance
filter, not a batch cap).
Bad data (trellis_layout.BadDataError: a missing or unreadable file, a wrong shape or dtype, a NaN,
an out-of-range or duplicate coordinate) stops the build with the sha256 and the file named
(`on_bad_data="raise"`), or is skipped and counted (`"skip"`). The counts, the skipped instances, the
normalisation and the per-record voxel counts go into the builder's metadata (`build_summary`).
TFDS writes into a temporary directory renamed only on success: a failed or interrupted build leaves
nothing that reads as prepared.
"""
import dataclasses
import hashlib
import json
import os

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from mdt_jax import stages
from mdt_jax.data import trellis_layout as layout
from mdt_jax.data.sparse_batch import VOXEL_COUNTS_METADATA
from mdt_jax.data.tfds_base import PackageBuilder

# The published SLat normalisation: TRELLIS-image-large's SLat flow training config,
# dataset.args.normalization (feats -> (feats - mean) / std per channel).
PUBLISHED_SLAT_NORMALIZATION = {
    "mean": (-2.1687545776367188, -0.004347046371549368, -0.13352349400520325,
             -0.08418072760105133, -0.5271206498146057, 0.7238689064979553,
             -1.1414450407028198, 1.2039363384246826),
    "std": (2.377650737762451, 2.386378288269043, 2.124418020248413, 2.1748552322387695,
            2.663944721221924, 2.371192216873169, 2.6217446327209473, 2.684523105621338),
}
SUMMARY_METADATA = "build_summary"


@dataclasses.dataclass(eq=False)
class TrellisLatentsConfig(tfds.core.BuilderConfig):
  """Options of a TRELLIS-layout build; `trellis_config` fills the name and the usual defaults.

  normalization: None or {"mean": [C], "std": [C]} (C = 8), applied to the stored latents.
  on_bad_data: "raise" or "skip".
  """
  root: str = ""
  stage: str = "ss"
  latent_model: str = ""
  min_aesthetic_score: float | None = None
  require_cond_views: bool = True
  require_captions: bool = False
  max_num_voxels: int | None = 32_768
  normalization: dict | None = None
  on_bad_data: str = "raise"


def trellis_config(root, stage, latent_model, **options):
  """A `TrellisLatentsConfig` named `<stage>-<latent_model>-<digest of root and options>`.

  The digest keeps builds of different roots or options in different directories of one data_dir.
  SLat defaults to PUBLISHED_SLAT_NORMALIZATION, SS to no normalisation.
  """
  resolved = stages.get(stage, field="stage")
  stage = resolved.name
  if resolved.sparse:
    options.setdefault("normalization", PUBLISHED_SLAT_NORMALIZATION)
  root = os.path.abspath(root)
  key = json.dumps({"root": root, "stage": stage, "latent_model": latent_model, **options},
                   sort_keys=True, default=list)
  digest = hashlib.sha256(key.encode()).hexdigest()[:10]
  return TrellisLatentsConfig(name=f"{stage}-{latent_model}-{digest}", root=root, stage=stage,
                              latent_model=latent_model, **options)


def normalization_from_trellis_config(path):
  """`dataset.args.normalization` ({"mean": [...], "std": [...]}) of a TRELLIS training json."""
  with open(path) as f:
    return json.load(f)["dataset"]["args"]["normalization"]


def _normalization_arrays(normalization, channels):
  if normalization is None:
    return None
  mean = np.asarray(normalization["mean"], np.float32)
  std = np.asarray(normalization["std"], np.float32)
  if mean.shape != (channels,) or std.shape != (channels,) or np.any(std <= 0):
    raise ValueError(f"normalization needs {channels} means and {channels} positive stds, got "
                     f"{normalization}")
  return mean, std


def _aesthetic_score(row, root):
  text = row.get("aesthetic_score", "") or ""
  try:
    return float(text) if text.strip() else float("nan")
  except ValueError as e:
    raise layout.BadDataError(row["sha256"], os.path.join(root, "metadata.csv"), "unreadable file",
                              f"aesthetic_score {text!r} is not a number") from e


def _captions(row, root):
  text = row.get("captions", "") or ""
  if not text.strip():
    return []
  try:
    captions = json.loads(text)
  except ValueError as e:
    raise layout.BadDataError(row["sha256"], os.path.join(root, "metadata.csv"), "unreadable file",
                              f"captions are not JSON: {e}") from e
  return [str(c) for c in captions]


class TrellisLatents(PackageBuilder):
  """SS latents (dense) or SLat latents (sparse) of a TRELLIS dataset root, with conditions."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIG_CLASS = TrellisLatentsConfig

  def _info(self):
    config = self.builder_config
    stage = stages.get(config.stage, field="TrellisLatentsConfig.stage")
    if config.on_bad_data not in ("raise", "skip"):
      raise ValueError(f"TrellisLatentsConfig.on_bad_data must be 'raise' or 'skip', got {config.on_bad_data!r}")
    features = {
        "sha256": tfds.features.Text(),
        "views": tfds.features.Sequence(tfds.features.Text()),
        "captions": tfds.features.Sequence(tfds.features.Text()),
        "aesthetic_score": tfds.features.Scalar(dtype=np.float32),
    }
    if stage.sparse:
      features["coords"] = tfds.features.Tensor(shape=(None, 3), dtype=np.int32)
      features["feats"] = tfds.features.Tensor(shape=(None, layout.SLAT_CHANNELS), dtype=np.float32)
      features["num_voxels"] = tfds.features.Scalar(dtype=np.int32)
    else:
      channels, *grid = layout.SS_LATENT_SHAPE
      features["ss_latent"] = tfds.features.Tensor(shape=(*grid, channels), dtype=np.float32)
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 features=tfds.features.FeaturesDict(features),
                                 disable_shuffling=True, metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _filter_reason(self, row):
    """Why a metadata row is left out before its latent is read, or None."""
    config = self.builder_config
    column = ("latent_" if stages.get(config.stage).sparse else "ss_latent_") + config.latent_model
    if column in row and not layout.is_true(row[column]):
      return f"{column} is false"
    if config.min_aesthetic_score is not None:
      if not _aesthetic_score(row, config.root) >= config.min_aesthetic_score:
        return f"aesthetic_score below {config.min_aesthetic_score}"
    if config.require_cond_views and "cond_rendered" in row and not layout.is_true(row["cond_rendered"]):
      return "cond_rendered is false"
    if config.require_captions and not _captions(row, config.root):
      return "no captions"
    return None

  def _example(self, row, norm):
    """The record of one metadata row; trellis_layout validates every file it reads."""
    config, sha256 = self.builder_config, row["sha256"]
    example = {"sha256": sha256, "captions": _captions(row, config.root),
               "aesthetic_score": _aesthetic_score(row, config.root),
               "views": layout.load_view_files(config.root, sha256) if config.require_cond_views else []}
    if stages.get(config.stage).sparse:
      coords, feats = layout.load_slat(config.root, config.latent_model, sha256)
      example.update(coords=coords, feats=feats if norm is None else (feats - norm[0]) / norm[1],
                     num_voxels=len(coords))
    else:
      latent = layout.load_ss_latent(config.root, config.latent_model, sha256)
      example["ss_latent"] = latent if norm is None else (latent - norm[0]) / norm[1]
    return example

  def _generate_examples(self):
    config = self.builder_config
    sparse = stages.get(config.stage).sparse
    channels = layout.SLAT_CHANNELS if sparse else layout.SS_LATENT_SHAPE[0]
    norm = _normalization_arrays(config.normalization, channels)
    rows = layout.read_metadata(config.root)
    filtered, skipped, skipped_instances, counts, written = {}, {}, [], [], 0
    for key, row in enumerate(rows):
      try:
        reason = self._filter_reason(row)
        example = None if reason else self._example(row, norm)
      except layout.BadDataError as e:
        if config.on_bad_data == "raise":
          raise
        skipped[e.reason] = skipped.get(e.reason, 0) + 1
        skipped_instances.append({"sha256": e.sha256, "path": e.path, "reason": e.reason})
        continue
      if (example is not None and sparse and config.max_num_voxels is not None
          and example["num_voxels"] > config.max_num_voxels):
        reason = f"more than {config.max_num_voxels} voxels"
      if reason:
        filtered[reason] = filtered.get(reason, 0) + 1
        continue
      if sparse:
        counts.append(example["num_voxels"])
      written += 1
      yield key, example
    summary = {"rows": len(rows), "written": written, "filtered": filtered, "skipped": skipped}
    logging.info("TrellisLatents %s: %s", config.name, summary)
    self.info.metadata[SUMMARY_METADATA] = {**summary, "skipped_instances": skipped_instances}
    self.info.metadata["normalization"] = config.normalization
    if sparse:
      self.info.metadata[VOXEL_COUNTS_METADATA] = {"train": counts}


def build_summary(builder):
  """The build's summary: rows, written, filtered {reason: n}, skipped {reason: n}, skipped_instances."""
  return builder.info.metadata[SUMMARY_METADATA]
