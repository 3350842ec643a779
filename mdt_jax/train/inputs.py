"""The training input stream: this host's batches from the data pipeline -> global device arrays.

A step takes ``batch_size_per_device`` instances per batch shard (a (data, fsdp) mesh position), as
``config.batch_split`` micro-batches of ``batch_size_per_device / batch_split`` each (gradient
accumulation, as TRELLIS's ``batch_size_per_gpu`` and ``batch_split``), stacked on a leading axis.
Dense latents are ``x0 [B, ...]``; sparse ones a ``SparseShards`` of per-shard layouts ``[D, cap, ...]``
(docs/design.md, Sparse tensors), the micro-batches padded to one capacity, with static coarse capacities
(the parents' bucketed count at each of the model's coarse levels, the max over the step's shards and
hosts) so that the model's coarse levels and its transformer run at their own size. The condition is ``cond [B, L, C]`` (toy tokens, or precomputed DINOv2
tokens, float16) or ``cond_image [B, 518, 518, 3]`` (views the step encodes with the frozen DINOv2).
The iterator's position is part of the training checkpoint.

Datasets (``config.data.dataset``): ``toy`` (built locally on first use) or ``trellis`` (a TRELLIS
dataset root, built once into TFDS with its filters and the SLat normalisation; trellis_builder).
"""
from __future__ import annotations

import fcntl
import functools
import shutil
from pathlib import Path

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tensorflow_datasets.core import constants as tfds_constants

from mdt_jax import stages
from mdt_jax.data import pipeline, sparse_batch, toy_builder, toy_inputs, trellis_builder, trellis_inputs
from mdt_jax.sparse import SparseShards, bucket_capacity, coarse_capacities
from mdt_jax.train.partitioning import BATCH_AXES

MODEL_KEYS = ("x0", "cond", "cond_image")  # what the step consumes; ids and strings stay on the host
TRAIN_CONDITIONS = ("image", "tokens")     # text needs a text encoder, which mdt_jax does not ship


def micro_batch_per_device(config) -> int:
  """Instances per batch shard in one micro-batch: batch_size_per_device / batch_split."""
  if config.batch_size_per_device % config.batch_split:
    raise ValueError(f"config.batch_size_per_device={config.batch_size_per_device} is not a multiple of "
                     f"config.batch_split={config.batch_split}")
  return config.batch_size_per_device // config.batch_split


def host_layout(config, mesh: Mesh) -> pipeline.HostLayout:
  """This host's share of one micro-batch."""
  shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  if shards % jax.process_count():
    raise ValueError(f"config.mesh: {shards} batch shards do not split over {jax.process_count()} hosts")
  return pipeline.HostLayout(instances_per_device=micro_batch_per_device(config),
                             devices_per_host=shards // jax.process_count(),
                             process_index=jax.process_index(), process_count=jax.process_count())


def _data_dir(config, workdir) -> str:
  return config.data.data_dir or str(Path(workdir) / "tfds")


def toy_dataset_builder(config, workdir) -> toy_builder.ToyShapes:
  """The toy builder of ``config.data.toy_config``, or a smaller train split when ``toy_num_train``."""
  data = config.data
  toy_config = data.toy_config
  if data.toy_num_train:
    base = next(c for c in toy_builder.ToyShapes.BUILDER_CONFIGS if c.name == data.toy_config)
    toy_config = toy_builder.ToyShapesConfig(name=f"{base.name}_n{data.toy_num_train}", resolution=base.resolution,
                                             num_train=data.toy_num_train, seed=base.seed)
  return toy_builder.ToyShapes(config=toy_config, data_dir=_data_dir(config, workdir))


def check_trellis_fields(config):
  """config.data.root (an existing TRELLIS dataset root directory) and config.data.latent_model are set."""
  data = config.data
  if not data.root or not data.latent_model:
    raise ValueError("config.data.dataset='trellis' needs config.data.root (a TRELLIS dataset root) and "
                     "config.data.latent_model (its latents' folder name)")
  if not Path(data.root).is_dir():
    raise FileNotFoundError(f"config.data.root: no such directory {data.root}")


def trellis_dataset_builder(config, workdir) -> trellis_builder.TrellisLatents:
  """TrellisLatents of ``config.data.root`` for ``config.stage`` with the config's filters."""
  check_trellis_fields(config)
  data = config.data
  options = dict(min_aesthetic_score=data.min_aesthetic_score, on_bad_data=data.on_bad_data,
                 require_cond_views=True)
  if stages.get(config.stage).sparse:
    options["max_num_voxels"] = data.max_num_voxels
  builder_config = trellis_builder.trellis_config(data.root, config.stage, data.latent_model, **options)
  return trellis_builder.TrellisLatents(config=builder_config, data_dir=_data_dir(config, workdir))


def prepare(builder):
  """Builds the dataset once: process 0 first while the others wait, then each of the others (a no-op
  on a shared filesystem; a local build where each host has its own data_dir)."""
  if jax.process_index() == 0:
    _locked_build(builder)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f"prepared {builder.name}/{builder.builder_config.name}")
    _locked_build(builder)
  return builder


def _locked_build(builder):
  """``download_and_prepare`` under an exclusive lock on ``<data_dir>/<name>/<config>/.build.lock``:
  concurrent runs sharing a data_dir build one at a time (the later ones find it built). Under the
  lock, TFDS temporary directories (``incomplete.*``) are a killed build's: they are removed first."""
  config_dir = Path(builder.data_path).parent
  config_dir.mkdir(parents=True, exist_ok=True)
  with open(config_dir / ".build.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    for stale in config_dir.glob(f"{tfds_constants.INCOMPLETE_PREFIX}*"):
      logging.warning("removing %s, left by an interrupted data set build", stale)
      if stale.is_dir():
        shutil.rmtree(stale)
      else:
        stale.unlink()
    builder.download_and_prepare(file_format="array_record")


def _decoder(config):
  """decode(record, rng) -> example for the pipeline."""
  data = config.data
  if data.dataset == "toy":
    return toy_inputs.ToyInputs(stage=config.stage)
  if data.condition not in TRAIN_CONDITIONS:
    raise ValueError(f"config.data.condition must be one of {TRAIN_CONDITIONS} for training, got "
                     f"{data.condition!r}")
  return trellis_inputs.TrellisInputs(root=data.root, condition=data.condition, token_dir=data.token_dir or None)


def _stack_padded(layouts: list[dict]) -> dict:
  """Sparse per-shard layouts ``{coords, feats, mask} [D, cap_i, ...]`` -> ``[k, D, max cap_i, ...]``; the
  added rows are padding (zeros, mask False). The largest bucketed capacity is itself on the ladder."""
  cap = max(layout["mask"].shape[1] for layout in layouts)
  pad = lambda a: np.pad(a, [(0, 0), (0, cap - a.shape[1])] + [(0, 0)] * (a.ndim - 2))
  return {key: np.stack([pad(layout[key]) for layout in layouts]) for key in layouts[0]}


def floored_capacity(floor: int, field: str):
  """``n -> max(bucket_capacity(n), floor)``; ``floor`` (config.data.<field>) must be 0 or on the ladder.

  A floor above most batches' needs gives one compiled program instead of one per capacity bucket
  (each a fresh compilation of the step), at the price of padding."""
  if floor and bucket_capacity(floor) != floor:
    raise ValueError(f"config.data.{field}={floor} is not a capacity of mdt_jax.sparse.bucket_capacity's "
                     f"ladder (16, 24, 32, 48, ...); the nearest above is {bucket_capacity(floor)}")
  return functools.partial(_floored_bucket, floor=floor)


def _floored_bucket(n: int, floor: int) -> int:
  return max(bucket_capacity(n), floor)


def agreed_coarse_capacities(coords, mask, levels: int, floor: int = 0) -> tuple[int, ...]:
  """Coarse capacities of this host's sparse arrays ``[..., cap, 4]`` (at least ``floor``), the max over
  all hosts (each host sees only its own shards, and every host must compile the same program)."""
  local = tuple(max(c, floor) for c in coarse_capacities(coords, mask, levels))
  if jax.process_count() == 1 or not levels:
    return local
  return tuple(int(c) for c in multihost_utils.process_allgather(np.asarray(local, np.int64)).max(0))


class TrainInputs:
  """Resumable iterator of global micro-batch stacks: ``next(inputs) -> {key: jax.Array [k, ...]}``
  (``x0`` a SparseShards for sparse stages). ``coarse_levels``: the sparse model's number of 2x
  down-sampling levels (``len(model.stages)``)."""

  def __init__(self, config, workdir, mesh: Mesh, coarse_levels: int = 0):
    if config.data.dataset == "toy":
      self.builder = prepare(toy_dataset_builder(config, workdir))
    elif config.data.dataset == "trellis":
      self.builder = prepare(trellis_dataset_builder(config, workdir))
    else:
      raise ValueError(f"config.data.dataset must be 'toy' or 'trellis', got {config.data.dataset!r}")
    source = self.builder.as_data_source()["train"]
    self.layout = host_layout(config, mesh)
    self.sparse = stages.get(config.stage).sparse
    collate = (pipeline.SparseCollate(sparse_batch.voxel_counts(self.builder, "train"), self.layout,
                                      capacity_fn=floored_capacity(config.data.min_capacity, "min_capacity"))
               if self.sparse else pipeline.dense_collate)
    self.iterator = pipeline.batch_iterator(source, _decoder(config), self.layout, seed=config.seed, collate=collate,
                                            num_threads=config.data.num_threads)
    self.splits = config.batch_split
    self.mesh = mesh
    self.coarse_levels = coarse_levels
    floored_capacity(config.data.min_coarse_capacity, "min_coarse_capacity")  # validates the field
    self.min_coarse_capacity = config.data.min_coarse_capacity

  def get_state(self) -> dict:
    return self.iterator.get_state()

  def set_state(self, state: dict):
    self.iterator.set_state(state)

  def __iter__(self):
    return self

  def __next__(self):
    micro = [next(self.iterator) for _ in range(self.splits)]
    host = {k: _stack_padded([m[k] for m in micro]) if isinstance(micro[0][k], dict)
            else np.stack([m[k] for m in micro]) for k in MODEL_KEYS if k in micro[0]}
    if self.sparse:
      x0 = host["x0"]
      coarse = agreed_coarse_capacities(x0["coords"], x0["mask"], self.coarse_levels, self.min_coarse_capacity)
      host["x0"] = SparseShards(**x0, batch_size=self.layout.instances_per_device, coarse_capacities=coarse)
    return jax.tree.map(self._global, host)

  def _global(self, local: np.ndarray) -> jax.Array:
    """[k, local shards or instances, ...] on this host -> a global array split over the batch axes."""
    sharding = NamedSharding(self.mesh, P(None, BATCH_AXES, *([None] * (local.ndim - 2))))
    return jax.make_array_from_process_local_data(sharding, local)
