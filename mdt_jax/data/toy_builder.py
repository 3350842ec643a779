"""TFDS builder `ToyShapes`: the procedural toy 3D dataset, generated locally, deterministic from a seed.

Build (array_record files; TensorFlow is not needed, never use tfrecord / `as_dataset`):
  builder = ToyShapes(config="r16", data_dir=...)      # or config=ToyShapesConfig(name=..., ...)
  builder.download_and_prepare(file_format="array_record")
  source = builder.as_data_source()["train"]            # random access; record i has key i

Each record (`shape_index` is its position in the split):
  occupancy    bool [R, R, R] (axes x, y, z; zlib-compressed on disk)
  cond_id      int32, family * NUM_SIZE_BUCKETS + size_bucket (toy_condition)
  family       int32, index into toy_shapes.FAMILIES
  size_bucket  int32, index into toy_shapes.SIZE_BUCKETS
  num_voxels   int32, occupied voxels
  colour_gradient  float32 [3, 3], the shape's stage-2 colour gradient (toy_features)
  shape_index  int32
Latents are derived at load time by toy_inputs (stage 1: fold.occupancy_to_latent; stage 2:
toy_features), which keeps the files small (20,000 shapes at R = 16: ~10 MB).

Splits: `train` (num_train shapes, conditions cycling 0, 1, ..., NUM_CONDITIONS - 1) and `test`
(test_per_condition shapes of every condition, drawn from an independent random stream). The
builder's metadata holds the per-record voxel counts of each split (sparse_batch.voxel_counts).
TFDS writes into a temporary directory and renames it only when every split is complete, so an
interrupted build leaves nothing that reads as a prepared dataset.
"""
import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mdt_jax.data import toy_condition, toy_features, toy_shapes
from mdt_jax.data.sparse_batch import VOXEL_COUNTS_METADATA
from mdt_jax.data.tfds_base import PackageBuilder

_SPLIT_STREAMS = {"train": 0, "test": 1}
_COLOUR_STREAM = 1  # the colour gradients' stream, apart from the shapes' (so either can change alone)
_CHUNK_VOXELS = 1 << 23  # occupancy voxels generated per chunk (bounds memory at R = 32)


@dataclasses.dataclass(eq=False)
class ToyShapesConfig(tfds.core.BuilderConfig):
  """resolution R (even), train split size, test shapes per condition, generation seed."""
  resolution: int = 16
  num_train: int = 20_000
  test_per_condition: int = 32
  seed: int = 0


def split_conditions(config, split):
  """Condition ids of the split's shapes, in record order: int64 [n]."""
  if split == "train":
    return np.arange(config.num_train) % toy_condition.NUM_CONDITIONS
  if split == "test":
    return np.repeat(np.arange(toy_condition.NUM_CONDITIONS), config.test_per_condition)
  raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_STREAMS)}")


def split_shapes(config, split):
  """The split's `ShapeParams`, in record order, from the (seed, split) random stream."""
  cond = split_conditions(config, split)
  family, size_bucket = toy_condition.split_condition(cond)
  rng = np.random.default_rng([config.seed, _SPLIT_STREAMS[split]])
  return toy_shapes.sample_shapes(rng, family, size_bucket)


def split_colour_gradients(config, split):
  """The split's stage-2 colour gradients, in record order: float32 [n, 3, 3] (toy_features), as stored."""
  n = len(split_conditions(config, split))
  rng = np.random.default_rng([config.seed, _SPLIT_STREAMS[split], _COLOUR_STREAM])
  return toy_features.sample_colour_gradients(rng, n).astype(np.float32)


class ToyShapes(PackageBuilder):
  """Procedural primitive shapes (8 families x 3 size buckets) as occupancy grids."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release.",
                   "2.0.0": "Upright shapes (random heading only); stage-2 colour gradients (colour_gradient)."}
  BUILDER_CONFIGS = [
      ToyShapesConfig(name="r16", description="R = 16, the default."),
      ToyShapesConfig(name="r32", resolution=32, description="R = 32."),
  ]

  def _info(self):
    r = self.builder_config.resolution
    if r % 2:
      raise ValueError(f"resolution must be even (the stage-1 fold halves it), got {r}")
    scalar = lambda: tfds.features.Scalar(dtype=np.int32)
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "occupancy": tfds.features.Tensor(shape=(r, r, r), dtype=np.bool_,
                                              encoding=tfds.features.Encoding.ZLIB),
            "cond_id": scalar(), "family": scalar(), "size_bucket": scalar(),
            "colour_gradient": tfds.features.Tensor(shape=(3, 3), dtype=np.float32),
            "num_voxels": scalar(), "shape_index": scalar(),
        }),
        disable_shuffling=True,
        metadata=tfds.core.MetadataDict(),
    )

  def _split_generators(self, dl_manager):
    self.info.metadata[VOXEL_COUNTS_METADATA] = {}
    return {split: self._generate_examples(split) for split in _SPLIT_STREAMS}

  def _generate_examples(self, split):
    config = self.builder_config
    params = split_shapes(config, split)
    cond = split_conditions(config, split)
    colour = split_colour_gradients(config, split)
    counts = []
    step = max(1, _CHUNK_VOXELS // config.resolution ** 3)
    for start in range(0, len(params), step):
      occupancy = toy_shapes.voxelize(params.take(slice(start, start + step)), config.resolution)
      for offset, occ in enumerate(occupancy):
        i = start + offset
        counts.append(int(occ.sum()))
        yield i, {"occupancy": occ, "cond_id": cond[i], "family": params.family[i],
                  "size_bucket": params.size_bucket[i], "colour_gradient": colour[i],
                  "num_voxels": counts[-1], "shape_index": i}
    self.info.metadata[VOXEL_COUNTS_METADATA][split] = counts
