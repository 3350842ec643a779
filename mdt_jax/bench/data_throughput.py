"""Input-pipeline throughput on the toy dataset: dense and sparse batches, and sparse padding
(launch/benchmark_data.py).

Builds the default toy dataset if needed, then times `batches` batches (after one warm-up batch)
of the grain iterator for each read-thread count, and the plain source reads alone for reference.

Measured on the 2-core CPU machine (2026-11, default toy set, 4 devices x 8 instances, under a load
average of ~6-7 from other work, so lower bounds): one-at-a-time source reads ~1,550 records/s;
dense batches 1,500-2,400 examples/s; sparse batches 380-550 examples/s (the stage-2 features are
computed on the fly, ~1.3 ms a shape, mostly the distance transform); sparse padding fraction 0.39
(capacities 1,536-4,096; one capacity for all devices), 0.12 with 1 device x 32 instances.
"""
import time

import numpy as np

from mdt_jax import stages
from mdt_jax.data import pipeline, sparse_batch, toy_builder, toy_inputs


def data_throughput(data_dir: str, instances_per_device: int = 8, devices: int = 4, batches: int = 40,
                    threads: tuple[int, ...] = (0, 1, 2), log=print) -> None:
  """Logs the source read rate, then for each stage (dense SS, sparse SLat) and read-thread count the
  batch rate in examples/s (sparse: with the padding fraction and the capacities)."""
  builder = toy_builder.ToyShapes(config="r16", data_dir=data_dir)
  builder.download_and_prepare(file_format="array_record")
  source = builder.as_data_source()["train"]
  layout = pipeline.HostLayout(instances_per_device=instances_per_device, devices_per_host=devices)
  n = batches * layout.host_batch
  start = time.perf_counter()
  for i in range(n):
    source[i % len(source)]
  log(f"source reads, one at a time: {n / (time.perf_counter() - start):.0f} records/s")
  sparse = pipeline.SparseCollate(sparse_batch.voxel_counts(builder, "train"), layout)
  for stage in stages.STAGES:
    name, collate = ("sparse", sparse) if stage.sparse else ("dense", pipeline.dense_collate)
    for count in threads:
      iterator = pipeline.batch_iterator(source, toy_inputs.ToyInputs(stage), layout, seed=0,
                                         collate=collate, num_threads=count)
      next(iterator)
      start = time.perf_counter()
      timed = [next(iterator) for _ in range(batches)]
      rate = n / (time.perf_counter() - start)
      line = f"{name} batches ({layout.host_batch} instances), {count} threads: {rate:.0f} examples/s"
      if stage.sparse:
        pad = np.mean([sparse_batch.padding_fraction(b["x0"]["mask"]) for b in timed])
        caps = sorted({b["x0"]["mask"].shape[1] for b in timed})
        line += f", padding fraction {pad:.3f}, capacities {caps}"
      log(line)
