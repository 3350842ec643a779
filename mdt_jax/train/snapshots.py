"""Periodic sample snapshots of the (EMA) student: arrays and PNG renders at several step counts.

``<workdir>/snapshots/<train step>/steps<k>.npz`` and ``steps<k>_<i>.png`` for each Euler step
count k of ``config.snapshot_steps``, on the first ``config.snapshot_count`` toy test conditions. A
snapshot is written into ``snapshots/.<train step>.partial/`` and renamed into place when complete, so
``snapshots/<train step>/`` exists only whole (``Snapshots.done``).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np

from mdt_jax import flow, stages
from mdt_jax.data import fold, toy_inputs
from mdt_jax.generation.export import render_views
from mdt_jax.models import registry
from mdt_jax.sparse import SparseTensor
from mdt_jax.train.inputs import toy_dataset_builder


class Snapshots:
  """Fixed conditions and noises, one compiled sampler per step count (toy dataset, prepared)."""

  def __init__(self, config, workdir, model):
    self.config, self.dir = config, Path(workdir) / "snapshots"
    self.stage = stages.get(config.stage)
    source = toy_dataset_builder(config, workdir).as_data_source()["test"]
    count = min(config.snapshot_count, len(source))
    records = [source[i] for i in range(count)]
    decode = toy_inputs.ToyInputs(stage=self.stage)
    examples = [decode(r) for r in records]
    self.cond = np.stack([e["cond"] for e in examples])
    key = jax.random.PRNGKey(config.seed + 1)
    if self.stage.sparse:
      coords = np.concatenate([np.concatenate([np.full((len(e["coords"]), 1), i), e["coords"]], 1)
                               for i, e in enumerate(examples)]).astype(np.int32)
      noise = np.asarray(jax.random.normal(key, (len(coords), examples[0]["feats"].shape[-1])))
      self.noise = SparseTensor.from_packed(coords, noise, batch_size=count)
    else:
      self.noise = np.asarray(jax.random.normal(key, (count, *examples[0]["x0"].shape)))
    self.resolution = records[0]["occupancy"].shape[0]
    self.sampler = flow.jit_sample(registry.velocity(model))

  @staticmethod
  def done(workdir, train_step: int) -> bool:
    return (Path(workdir) / "snapshots" / str(train_step)).is_dir()

  def __call__(self, params, train_step: int):
    final, out = self.dir / str(train_step), self.dir / f".{train_step}.partial"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for steps in self.config.snapshot_steps:
      x0, _ = self.sampler(params, self.noise, self.cond, steps=int(steps), rescale_t=self.config.rescale_t)
      if self.stage.sparse:
        coords, feats = x0.to_packed()
        np.savez(out / f"steps{steps}.npz", coords=coords, feats=feats)
        shapes = [coords[coords[:, 0] == i, 1:] for i in range(x0.batch_size)]
      else:
        latents = np.asarray(x0)
        occupancy = fold.latent_to_occupancy(latents)
        np.savez(out / f"steps{steps}.npz", latents=latents, occupancy=occupancy)
        shapes = [np.argwhere(o) for o in occupancy]
      for i, voxels in enumerate(shapes):
        render_views(out / f"steps{steps}_{i}.png", voxels, self.resolution,
                     title=f"train step {train_step}, {steps} sampling step(s)")
    shutil.rmtree(final, ignore_errors=True)  # an earlier run's snapshot of this step, redone after a resume
    out.rename(final)
