"""The procedural toy dataset: fold, shapes, features, condition tokens, TFDS builder, recovery."""
import glob
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mdt_jax.data import fold, toy_builder, toy_condition, toy_features, toy_inputs, toy_recovery
from mdt_jax.data.sparse_batch import voxel_counts

SMALL = dict(resolution=16, num_train=960, test_per_condition=16, seed=0)


def build(data_dir, name="small", **overrides):
  config = toy_builder.ToyShapesConfig(name=name, **{**SMALL, **overrides})
  builder = toy_builder.ToyShapes(config=config, data_dir=str(data_dir))
  builder.download_and_prepare(file_format="array_record")
  return builder


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  builder = build(tmp_path_factory.mktemp("toy"))
  source = builder.as_data_source()
  return builder, source["train"], source["test"]


def records(source):
  return [source[i] for i in range(len(source))]


def test_fold_round_trip_and_channel_order():
  rng = np.random.default_rng(0)
  for r in (16, 32):
    occ = rng.random((2, r, r, r)) < 0.3
    latent = fold.occupancy_to_latent(occ)
    assert latent.shape == (2, r // 2, r // 2, r // 2, 8) and latent.dtype == np.float32
    assert set(np.unique(latent)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(fold.latent_to_occupancy(latent), occ)
    values = rng.standard_normal((r // 2, r // 2, r // 2, 8)).astype(np.float32)
    np.testing.assert_array_equal(fold.fold(fold.unfold(values)), values)
  # voxel (2i + a, 2j + b, 2k + c) -> cell (i, j, k), channel 4a + 2b + c
  grid = np.arange(16 ** 3).reshape(16, 16, 16)
  folded = fold.fold(grid)
  for (i, j, k), (a, b, c) in [((1, 2, 3), (1, 0, 1)), ((7, 0, 5), (0, 1, 1)), ((0, 0, 0), (1, 1, 0))]:
    assert folded[i, j, k, 4 * a + 2 * b + c] == grid[2 * i + a, 2 * j + b, 2 * k + c]


def test_records(small):
  builder, train, test = small
  assert len(train) == 960 and len(test) == 16 * toy_condition.NUM_CONDITIONS
  for split, source in (("train", train), ("test", test)):
    recs = records(source)
    counts = voxel_counts(builder, split)
    np.testing.assert_array_equal(voxel_counts(tfds.builder_from_directory(builder.data_dir), split),
                                  counts)
    np.testing.assert_array_equal(counts, [r["occupancy"].sum() for r in recs])
    assert all(r["num_voxels"] == c > 0 for r, c in zip(recs, counts))
    assert [r["shape_index"] for r in recs] == list(range(len(recs)))
    cond = np.array([r["cond_id"] for r in recs])
    np.testing.assert_array_equal(cond, toy_condition.condition_id(
        [r["family"] for r in recs], [r["size_bucket"] for r in recs]))
    np.testing.assert_array_equal(cond, toy_builder.split_conditions(builder.builder_config, split))
  test_cond = np.array([r["cond_id"] for r in records(test)])
  assert np.all(np.bincount(test_cond, minlength=toy_condition.NUM_CONDITIONS) == 16)
  # The size buckets order the shapes' volumes within each family.
  train_recs = records(train)
  for family in range(toy_condition.NUM_FAMILIES):
    means = [np.mean([r["num_voxels"] for r in train_recs
                      if r["family"] == family and r["size_bucket"] == b]) for b in range(3)]
    assert means[0] < means[1] < means[2], (family, means)


def test_same_seed_same_bytes(tmp_path):
  tiny = dict(num_train=72, test_per_condition=1)
  a, b = build(tmp_path / "a", **tiny), build(tmp_path / "b", **tiny)
  c = build(tmp_path / "c", **tiny, seed=1)
  files = lambda builder: sorted(glob.glob(os.path.join(builder.data_dir, "*.array_record*")))
  assert len(files(a)) == 2
  for fa, fb in zip(files(a), files(b)):
    assert open(fa, "rb").read() == open(fb, "rb").read()
  assert a.info.metadata["num_voxels"] == b.info.metadata["num_voxels"]
  assert a.info.metadata["num_voxels"] != c.info.metadata["num_voxels"]


def test_resolution_32(tmp_path):
  builder = build(tmp_path, name="r32tiny", resolution=32, num_train=24, test_per_condition=1)
  record = builder.as_data_source()["train"][5]
  assert record["occupancy"].shape == (32, 32, 32)
  out = toy_inputs.ToyInputs("ss")(record)
  assert out["x0"].shape == (16, 16, 16, 8)
  np.testing.assert_array_equal(fold.latent_to_occupancy(out["x0"]), record["occupancy"])


def test_features_are_one_function_of_occupancy_condition_and_colour_draw(small):
  _, train, _ = small
  ss, slat = toy_inputs.ToyInputs("ss"), toy_inputs.ToyInputs("slat")
  all_feats, colour_spread = [], []
  for record in records(train)[:240]:
    sparse = slat(record)
    # Evaluation's path: decode the stage-1 latent, then recompute the features: exactly equal.
    occupancy = fold.latent_to_occupancy(ss(record)["x0"])
    coords, feats = toy_features.toy_features(occupancy, record["cond_id"], record["colour_gradient"])
    np.testing.assert_array_equal(coords, sparse["coords"])
    np.testing.assert_array_equal(feats, sparse["feats"])
    assert coords.dtype == np.int32 and feats.dtype == np.float32 and feats.shape == (len(coords), 8)
    np.testing.assert_array_equal(coords, np.argwhere(record["occupancy"]))
    assert np.all(np.isfinite(feats))
    # The conditional mean (no colour draw) differs in the colour channels only, by G z(p).
    _, mean = toy_features.toy_features(occupancy, record["cond_id"])
    np.testing.assert_array_equal(mean[:, :5], feats[:, :5])
    z = toy_features.normalised_positions(coords)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-9)
    np.testing.assert_allclose((z ** 2).sum(-1).mean(), 1, rtol=1e-9)
    expected = (z @ np.asarray(record["colour_gradient"], np.float64).T) / toy_features.FAMILY_COLOURS.std(0)
    np.testing.assert_allclose(feats[:, 5:] - mean[:, 5:], expected, atol=1e-5)
    colour_spread.append((feats[:, 5:] - mean[:, 5:]).std(0))
    all_feats.append(feats)
  std = np.concatenate(all_feats).std(0)
  assert np.all((std > 0.6) & (std < 1.4)), std
  # The draws' spread within a shape: tint std 0.3 x sqrt(1/3) RGB units / the family colours' std.
  np.testing.assert_allclose(np.sqrt(np.mean(np.square(colour_spread))),
                             0.3 / np.sqrt(3) / toy_features.FAMILY_COLOURS.std(0).mean(), rtol=0.25)


def test_colour_gradients_follow_their_stated_distribution():
  g = toy_features.sample_colour_gradients(np.random.default_rng(0), 4000)
  assert g.shape == (4000, 3, 3)
  # rank one, tint x direction: the direction is a unit vector, so each row's norm is |tint_c|
  np.testing.assert_allclose(np.linalg.svd(g, compute_uv=False)[:, 1:], 0, atol=1e-12)
  tint_norms = np.linalg.norm(g, axis=-1)
  np.testing.assert_allclose(np.sqrt(np.mean(tint_norms ** 2)), toy_features.COLOUR_TINT_STD, rtol=0.05)
  np.testing.assert_allclose(g.mean(0), 0, atol=0.02)
  # the split's draws are the records' and come from the seed alone
  config = toy_builder.ToyShapesConfig(name="colour", **SMALL)
  np.testing.assert_array_equal(toy_builder.split_colour_gradients(config, "test"),
                                toy_builder.split_colour_gradients(config, "test"))
  assert not np.array_equal(toy_builder.split_colour_gradients(config, "train")[:10],
                            toy_builder.split_colour_gradients(config, "test")[:10])


def test_condition_tokens():
  table = toy_condition.condition_table()
  assert table.shape == (toy_condition.NUM_CONDITIONS, 4, 64) and table.dtype == np.float32
  assert not table.flags.writeable
  np.testing.assert_array_equal(toy_condition.condition_tokens([3, 5]), table[[3, 5]])
  assert toy_condition.condition_tokens(2, channels=32).shape == (4, 32)
  assert not np.array_equal(toy_condition.condition_table(seed=1), table)
  assert toy_condition.table_checksum() == toy_condition.table_checksum()
  with pytest.raises(ValueError, match="out of range"):
    toy_condition.condition_tokens(toy_condition.NUM_CONDITIONS)
  record = {"cond_id": 7, "occupancy": np.zeros((16,) * 3, bool)}
  out = toy_inputs.ToyInputs("ss", num_tokens=2, channels=16)(record)
  np.testing.assert_array_equal(out["cond"], toy_condition.condition_tokens(7, 2, 16))


def test_family_recovery_well_above_chance(small):
  _, train, test = small
  tr, te = records(train), records(test)
  rate = toy_recovery.family_recovery_rate(
      np.stack([r["occupancy"] for r in te]), [r["family"] for r in te],
      np.stack([r["occupancy"] for r in tr]), [r["family"] for r in tr])
  assert rate > 4 / toy_condition.NUM_FAMILIES, rate  # chance is 1/8; measured 0.66 here


def test_interrupted_build_is_not_prepared(tmp_path, monkeypatch):
  original = toy_builder.ToyShapes._generate_examples

  def interrupted(self, split):
    for i, example in enumerate(original(self, split)):
      if i == 10:
        raise KeyboardInterrupt
      yield i, example[1]

  monkeypatch.setattr(toy_builder.ToyShapes, "_generate_examples", interrupted)
  with pytest.raises(KeyboardInterrupt):
    build(tmp_path, num_train=48, test_per_condition=1)
  monkeypatch.undo()
  config = toy_builder.ToyShapesConfig(name="small", **{**SMALL, "num_train": 48, "test_per_condition": 1})
  builder = toy_builder.ToyShapes(config=config, data_dir=str(tmp_path))
  assert not builder.is_prepared()
  assert not glob.glob(str(tmp_path / "**" / "dataset_info.json"), recursive=True)
  builder.download_and_prepare(file_format="array_record")
  assert len(builder.as_data_source()["train"]) == 48
