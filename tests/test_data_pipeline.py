"""The input pipeline: determinism, resume, 2-host sharding, sparse batch layout and padding."""
import numpy as np
import pytest

from mdt_jax.data import pipeline, sparse_batch, toy_builder, toy_inputs
from mdt_jax.sparse import bucket_capacity


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
  config = toy_builder.ToyShapesConfig(name="pipe", num_train=96, test_per_condition=1)
  builder = toy_builder.ToyShapes(config=config, data_dir=str(tmp_path_factory.mktemp("toy")))
  builder.download_and_prepare(file_format="array_record")
  return builder, builder.as_data_source()["train"]


def index_and_draw(record, rng):
  """A decode that exposes which record and which random draw each example got."""
  return {"index": np.int64(record["shape_index"]), "draw": rng.integers(1 << 30)}


def take(iterator, n):
  return [next(iterator) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_equal(x, y)


def test_same_seed_same_batches_and_resume(toy):
  _, source = toy
  layout = pipeline.HostLayout(instances_per_device=4, devices_per_host=2)
  make = lambda seed: pipeline.batch_iterator(source, toy_inputs.ToyInputs("ss"), layout, seed=seed)
  first = make(0)
  head = take(first, 5)
  state = first.get_state()
  tail = take(first, 15)  # runs past the 96-record epoch (12 batches)
  assert_batches_equal(take(make(0), 20), head + tail)
  resumed = make(0)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 15), tail)
  other = take(make(1), 1)[0]
  assert not np.array_equal(other["cond_id"], head[0]["cond_id"])
  assert head[0]["x0"].shape == (8, 8, 8, 8, 8) and head[0]["cond"].shape == (8, 4, 64)


def test_epochs_cover_every_record_and_reshuffle(toy):
  _, source = toy
  layout = pipeline.HostLayout(instances_per_device=8)
  batches = pipeline.host_batches(source, index_and_draw, layout, seed=3)
  epoch0 = np.concatenate([batches[k]["index"] for k in range(12)])
  epoch1 = np.concatenate([batches[k]["index"] for k in range(12, 24)])
  assert sorted(epoch0) == sorted(epoch1) == list(range(96))
  assert not np.array_equal(epoch0, epoch1)


def test_two_hosts_are_disjoint_and_cover(toy):
  _, source = toy
  hosts = [pipeline.host_batches(source, index_and_draw,
                                 pipeline.HostLayout(instances_per_device=3, devices_per_host=2,
                                                     process_index=h, process_count=2), seed=5)
           for h in range(2)]
  single = pipeline.host_batches(source, index_and_draw,
                                 pipeline.HostLayout(instances_per_device=12), seed=5)
  seen = [np.concatenate([hosts[h][k]["index"] for k in range(8)]) for h in range(2)]
  assert not set(seen[0]) & set(seen[1])
  assert sorted(np.concatenate(seen)) == list(range(96))
  # Host h holds the h-th block of the global batch, with the same random draws as one host would.
  for k in range(3):
    merged = {key: np.concatenate([hosts[0][k][key], hosts[1][k][key]]) for key in ("index", "draw")}
    np.testing.assert_equal(merged, single[k])


def test_sparse_batch_layout(toy):
  builder, source = toy
  counts = sparse_batch.voxel_counts(builder, "train")
  decode = toy_inputs.ToyInputs("slat")
  n, devices = 3, 2
  hosts = []
  for h in range(2):
    layout = pipeline.HostLayout(instances_per_device=n, devices_per_host=devices, process_index=h,
                                 process_count=2)
    hosts.append(pipeline.host_batches(source, decode, layout, seed=7,
                                       collate=pipeline.SparseCollate(counts, layout)))
  order = pipeline.global_batch_order(len(source), 7, 2 * devices * n)
  for k in range(4):
    global_counts = counts[order[k]]
    per_device = global_counts.reshape(-1, n).sum(1)
    capacity = bucket_capacity(int(per_device.max()))
    for h in range(2):
      batch = hosts[h][k]
      x0 = batch["x0"]
      assert x0["coords"].shape == (devices, capacity, 4) and x0["coords"].dtype == np.int32
      assert x0["feats"].shape == (devices, capacity, 8) and x0["feats"].dtype == np.float32
      assert x0["mask"].shape == (devices, capacity) and x0["mask"].dtype == bool
      assert batch["cond"].shape == (devices * n, 4, 64)
      for d in range(devices):
        row = 0
        for b in range(n):
          i = h * devices * n + d * n + b
          expected = decode(source[int(order[k][i])])
          m = len(expected["coords"])
          assert m == global_counts[i] == batch["num_voxels"][d * n + b]
          np.testing.assert_array_equal(x0["coords"][d, row:row + m, 0], b)
          np.testing.assert_array_equal(x0["coords"][d, row:row + m, 1:], expected["coords"])
          np.testing.assert_array_equal(x0["feats"][d, row:row + m], expected["feats"])
          assert x0["mask"][d, row:row + m].all()
          row += m
        assert not x0["mask"][d, row:].any()
        assert not x0["coords"][d, row:].any() and not x0["feats"][d, row:].any()


def test_sparse_count_mismatch_is_named(toy):
  builder, source = toy
  counts = sparse_batch.voxel_counts(builder, "train").copy()
  counts[:] += 1
  layout = pipeline.HostLayout(instances_per_device=2)
  batches = pipeline.host_batches(source, toy_inputs.ToyInputs("slat"), layout, seed=0,
                                  collate=pipeline.SparseCollate(counts, layout))
  with pytest.raises(ValueError, match="voxels but the metadata says"):
    batches[0]


def test_pack_devices_and_capacity():
  coords = [np.array([[1, 2, 3]]), np.array([[4, 5, 6], [7, 8, 9]]), np.zeros((0, 3), int),
            np.array([[0, 0, 1]])]
  feats = [np.full((len(c), 2), i + 1, np.float32) for i, c in enumerate(coords)]
  assert sparse_batch.batch_capacity([1, 2, 0, 1], 2, lambda m: 4 * m) == 12
  with pytest.raises(ValueError, match="below"):
    sparse_batch.batch_capacity([1, 2, 0, 1], 2, lambda m: 2)
  out = sparse_batch.pack_devices(coords, feats, devices=2, capacity=4)
  np.testing.assert_array_equal(out["coords"][0], [[0, 1, 2, 3], [1, 4, 5, 6], [1, 7, 8, 9], [0, 0, 0, 0]])
  np.testing.assert_array_equal(out["coords"][1], [[1, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
  np.testing.assert_array_equal(out["feats"][0, :, 0], [1, 2, 2, 0])
  np.testing.assert_array_equal(out["mask"], [[1, 1, 1, 0], [1, 0, 0, 0]])
  assert sparse_batch.padding_fraction(out["mask"]) == 0.5
  with pytest.raises(ValueError, match="capacity"):
    sparse_batch.pack_devices(coords, feats, devices=2, capacity=2)


def test_sparse_iterator_resumes(toy):
  builder, source = toy
  layout = pipeline.HostLayout(instances_per_device=2, devices_per_host=2)
  make = lambda: pipeline.batch_iterator(
      source, toy_inputs.ToyInputs("slat"), layout, seed=2,
      collate=pipeline.SparseCollate(sparse_batch.voxel_counts(builder, "train"), layout))
  first = make()
  take(first, 3)
  state = first.get_state()
  tail = take(first, 3)
  resumed = make()
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 3), tail)
