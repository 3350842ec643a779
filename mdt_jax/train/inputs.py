"""The training input stream: this host's batches from the data pipeline -> global device arrays.

Each step takes ``config.batch_split`` micro-batches, stacked on a leading axis; every micro-batch
holds ``batch_size_per_device`` instances per batch shard (a (data, fsdp) mesh position). Dense
latents are ``x0 [B, ...]``; sparse ones a per-shard layout ``{coords, feats, mask} [D, cap, ...]``
(CONTRACTS.md section 4). The iterator's position is part of the training checkpoint.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mdt_jax.data import pipeline, sparse_batch, toy_builder, toy_inputs
from mdt_jax.train.partitioning import BATCH_AXES

MODEL_KEYS = ("x0", "cond", "cond_image")  # what the step consumes; ids and strings stay on the host


def host_layout(config, mesh: Mesh) -> pipeline.HostLayout:
  shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  if shards % jax.process_count():
    raise ValueError(f"config.mesh: {shards} batch shards do not split over {jax.process_count()} hosts")
  return pipeline.HostLayout(instances_per_device=config.batch_size_per_device,
                             devices_per_host=shards // jax.process_count(),
                             process_index=jax.process_index(), process_count=jax.process_count())


def toy_dataset(config, workdir: str | Path, split: str = "train"):
  """(builder, data source) of the toy dataset, built on first use (no download)."""
  data_dir = config.data.data_dir or str(Path(workdir) / "tfds")
  builder = toy_builder.ToyShapes(config=config.data.toy_config, data_dir=data_dir)
  builder.download_and_prepare(file_format="array_record")
  return builder, builder.as_data_source()[split]


class TrainInputs:
  """Resumable iterator of global micro-batch stacks: ``next(inputs) -> {key: jax.Array [k, ...]}``."""

  def __init__(self, config, workdir, mesh: Mesh):
    if config.data.dataset != "toy":
      raise NotImplementedError(f"config.data.dataset={config.data.dataset!r}: the training loop reads the toy "
                                f"dataset; TRELLIS-layout builders exist in mdt_jax.data but are not wired yet")
    builder, source = toy_dataset(config, workdir)
    self.layout = host_layout(config, mesh)
    self.sparse = config.stage == "slat"
    decode = toy_inputs.ToyInputs(stage=config.stage)
    collate = (pipeline.SparseCollate(sparse_batch.voxel_counts(builder, "train"), self.layout)
               if self.sparse else pipeline.dense_collate)
    self.iterator = pipeline.batch_iterator(source, decode, self.layout, seed=config.seed, collate=collate,
                                            num_threads=config.data.num_threads)
    self.splits = config.batch_split
    self.mesh = mesh

  def get_state(self) -> dict:
    return self.iterator.get_state()

  def set_state(self, state: dict):
    self.iterator.set_state(state)

  def __iter__(self):
    return self

  def __next__(self):
    micro = [next(self.iterator) for _ in range(self.splits)]
    host = {k: np.stack([m[k] for m in micro]) if not isinstance(micro[0][k], dict)
            else {kk: np.stack([m[k][kk] for m in micro]) for kk in micro[0][k]}
            for k in MODEL_KEYS if k in micro[0]}
    return jax.tree.map(self._global, host)

  def _global(self, local: np.ndarray) -> jax.Array:
    """[k, local shards or instances, ...] on this host -> a global array split over the batch axes."""
    sharding = NamedSharding(self.mesh, P(None, BATCH_AXES, *([None] * (local.ndim - 2))))
    return jax.make_array_from_process_local_data(sharding, local)
