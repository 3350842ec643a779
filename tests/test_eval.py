"""Toy evaluation: the 1 - IoU distance, set metrics on known answers, stage-2 exactness, fidelity."""
import jax.numpy as jnp
import numpy as np
import pytest

from mdt_jax import eval as ev
from mdt_jax.data import fold, toy_builder, toy_condition
from mdt_jax.data.toy_features import toy_features
from mdt_jax.eval import set_metrics

SMALL = toy_builder.ToyShapesConfig(name="eval_small", resolution=16, num_train=960, test_per_condition=4)


@pytest.fixture(scope="module")
def small():
  """(train, test) ToySplits of a small toy dataset: 960 train shapes, 4 test shapes a condition."""
  return ev.toy_split(SMALL, "train"), ev.toy_split(SMALL, "test")


def blocks(specs, r=8):
  """Grids bool [n, r, r, r] holding one axis-aligned box each: specs of (x0, x1, y0, y1, z0, z1)."""
  grids = np.zeros((len(specs), r, r, r), bool)
  for g, (x0, x1, y0, y1, z0, z1) in zip(grids, specs):
    g[x0:x1, y0:y1, z0:z1] = True
  return grids


def test_iou_distance_known_values():
  a = blocks([(0, 2, 0, 2, 0, 2), (1, 3, 0, 2, 0, 2), (4, 8, 4, 8, 4, 8), (0, 0, 0, 0, 0, 0)])
  d = ev.iou_distance(a)
  # 8 and 8 voxels sharing 4: IoU 4 / 12; disjoint: 1; empty vs empty: 0 (toy_recovery's convention).
  expected = np.array([[0, 1 - 4 / 12, 1, 1], [1 - 4 / 12, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]])
  np.testing.assert_array_equal(d, expected)
  assert d.dtype == np.float64
  np.testing.assert_array_equal(ev.iou_distance(a[:2], a[1:]), expected[:2, 1:])
  rng = np.random.default_rng(0)
  x, y = rng.random((5, 17, 3, 5)) < 0.4, rng.random((3, 17, 3, 5)) < 0.4  # 255 voxels: padded words
  inter = (x[:, None] & y[None]).reshape(5, 3, -1).sum(-1)
  union = (x[:, None] | y[None]).reshape(5, 3, -1).sum(-1)
  np.testing.assert_array_equal(ev.iou_distance(x, y), 1 - inter / union)
  with pytest.raises(ValueError, match="one grid shape"):
    ev.iou_distance(x, y[:, :16])


def test_set_metrics_identical_copies_and_far_sets():
  shapes = blocks([(0, 2, 0, 2, 0, 2), (0, 3, 0, 3, 0, 3), (0, 4, 0, 2, 0, 2), (0, 2, 0, 2, 0, 5)])
  d = ev.iou_distance(shapes)
  # G is an exact copy of R (distinct shapes): every nearest neighbour is the copy in the other set.
  assert set_metrics.one_nna(d, d, d) == 0.0
  assert set_metrics.coverage(d) == 1.0
  assert set_metrics.minimum_matching_distance(d) == 0.0
  # Copies of one shape on both sides: every own-set and other-set distance ties at 0 -> 1/2 each.
  same = np.zeros((4, 4))
  assert set_metrics.one_nna(same, same, same) == 0.5
  # Far sets (distance 1 across, below 1 within): perfectly separable.
  far = blocks([(4, 6, 4, 6, 4, 6), (4, 7, 4, 7, 4, 7), (4, 8, 4, 6, 4, 6)])
  d_gr = ev.iou_distance(shapes, far)
  assert set_metrics.one_nna(d, ev.iou_distance(far), d_gr) == 1.0
  assert set_metrics.coverage(d_gr) == 1 / 3  # every tie at 1 goes to the lowest index
  assert set_metrics.minimum_matching_distance(d_gr) == 1.0


def test_one_nna_hand_case():
  # G = {0, 1}, R = {2, 10} on a line. 0: own 1 < other 2 (right); 1: own 1 = other 1 (1/2);
  # 2: own 8 > other 1 (wrong); 10: own 8 < other 9 (right) -> (1 + 0.5 + 0 + 1) / 4.
  g, r = np.array([0.0, 1.0]), np.array([2.0, 10.0])
  dist = lambda u, v: np.abs(u[:, None] - v[None, :])
  assert set_metrics.one_nna(dist(g, g), dist(r, r), dist(g, r)) == 2.5 / 4
  assert set_metrics.coverage(dist(g, r)) == 0.5
  assert set_metrics.minimum_matching_distance(dist(g, r)) == (1 + 9) / 2
  # A set of one shape has no own-set neighbour.
  assert set_metrics.one_nna(dist(g[:1], g[:1]), dist(r, r), dist(g[:1], r)) == 1 / 3


def test_one_nna_of_exchangeable_sets_matches_its_expectation():
  rng = np.random.default_rng(0)
  dist = lambda u, v: np.sqrt(((u[:, None] - v[None]) ** 2).sum(-1))
  for n_g, n_r in ((16, 16), (5, 11)):
    scores = []
    for _ in range(1500):
      g, r = rng.standard_normal((n_g, 2)), rng.standard_normal((n_r, 2))
      scores.append(set_metrics.one_nna(dist(g, g), dist(r, r), dist(g, r)))
    expected = set_metrics.exchangeable_1nna(n_g, n_r)
    assert abs(np.mean(scores) - expected) < 4 * np.std(scores) / np.sqrt(len(scores)), (n_g, n_r)
  assert set_metrics.exchangeable_1nna(16, 16) == 480 / 992


def test_decode_round_trips():
  rng = np.random.default_rng(1)
  occ = rng.random((3, 8, 8, 8)) < 0.3
  occ[1] = False
  latents = fold.occupancy_to_latent(occ)
  np.testing.assert_array_equal(ev.decode_latents(jnp.asarray(latents)), occ)
  # The decision is logit > 0: a small positive value is occupied, 0 is empty.
  soft = latents * 1e-3
  soft[0, 0, 0, 0, 0] = 0.0
  expected = occ.copy()
  expected[0, 0, 0, 0] = False
  np.testing.assert_array_equal(ev.decode_latents(soft), expected)
  coords = ev.occupancy_to_coords(occ)
  assert coords.dtype == np.int32 and coords.shape == (occ.sum(), 4)
  np.testing.assert_array_equal(coords, np.argwhere(occ))
  np.testing.assert_array_equal(ev.coords_to_occupancy(coords[::-1], 3, 8), occ)
  with pytest.raises(ValueError, match="non-finite"):
    ev.decode_latents(np.where(latents > 0, np.nan, latents))
  with pytest.raises(ValueError, match="outside"):
    ev.coords_to_occupancy(coords, 3, 7)


def test_toy_split_equals_the_builder(tmp_path):
  config = toy_builder.ToyShapesConfig(name="eval_tiny", num_train=48, test_per_condition=1)
  builder = toy_builder.ToyShapes(config=config, data_dir=str(tmp_path))
  builder.download_and_prepare(file_format="array_record")
  for split, source in builder.as_data_source().items():
    records = [source[i] for i in range(len(source))]
    data = ev.toy_split(config, split)
    np.testing.assert_array_equal(data.occupancy, np.stack([r["occupancy"] for r in records]))
    np.testing.assert_array_equal(data.cond_id, [r["cond_id"] for r in records])
    np.testing.assert_array_equal(data.family, [r["family"] for r in records])
    np.testing.assert_array_equal(data.colour_gradient, np.stack([r["colour_gradient"] for r in records]))


def test_split_halves():
  cond = np.array([1, 0, 1, 0, 1, 0, 1, 0, 2, 2])
  first, second = ev.split_halves(cond[:8], 2)
  np.testing.assert_array_equal(first, [1, 3, 0, 2])
  np.testing.assert_array_equal(second, [5, 7, 4, 6])
  with pytest.raises(ValueError, match="condition 2 has 2 shapes"):
    ev.split_halves(cond, 2)


def test_evaluate_stage1(small):
  train, test = small
  first, second = ev.split_halves(test.cond_id, 2)
  ref, real = test.take(first), test.take(second)
  labelled = dict(train_occ=train.occupancy, train_family=train.family)
  copy = ev.evaluate_stage1(ref.occupancy, ref.cond_id, ref.occupancy, ref.cond_id, **labelled)
  assert (copy["1nna"], copy["cov"], copy["mmd"]) == (0.0, 1.0, 0.0)
  assert copy["num_conditions"] == toy_condition.NUM_CONDITIONS and copy["num_generated"] == 48
  assert copy["1nna_exchangeable"] == set_metrics.exchangeable_1nna(2, 2)
  real_row = ev.evaluate_stage1(real.occupancy, real.cond_id, ref.occupancy, ref.cond_id, **labelled)
  # Family fidelity of real shapes: well above chance (1/8); measured 0.67 here.
  assert real_row["fidelity"] > 4 / toy_condition.NUM_FAMILIES, real_row["fidelity"]
  assert 0 < real_row["mmd"] < 1 and 0 < real_row["cov"] <= 1
  per = real_row["per_condition"]
  np.testing.assert_array_equal(per["cond_id"], np.arange(toy_condition.NUM_CONDITIONS))
  assert real_row["1nna"] == per["1nna"].mean() and real_row["fidelity"] == per["fidelity"].mean()
  # Empty shapes: distance 1 to every real shape, 0 to each other. Each scores 1; a real shape scores
  # 1, or 1/2 when it is disjoint from its condition's other real shape too (a tie at distance 1).
  empty = ev.evaluate_stage1(np.zeros_like(real.occupancy), real.cond_id, ref.occupancy, ref.cond_id)
  assert empty["fidelity"] == 0.0  # an empty shape has no nearest labelled shape
  d_rr = [ev.iou_distance(ref.occupancy[ref.cond_id == c])[0, 1] for c in range(24)]
  np.testing.assert_allclose(empty["1nna"], 1 - np.mean(np.equal(d_rr, 1.0)) / 4, rtol=1e-12)
  assert empty["mmd"] == 1.0
  # Shapes generated for the wrong family: fidelity near zero.
  wrong = (real.cond_id + toy_condition.NUM_SIZE_BUCKETS) % toy_condition.NUM_CONDITIONS
  misled = ev.evaluate_stage1(real.occupancy, wrong, ref.occupancy, ref.cond_id, **labelled)
  assert misled["fidelity"] < 0.3, misled["fidelity"]  # measured 0.15
  with pytest.raises(ValueError, match="no reference shapes"):
    ev.evaluate_stage1(real.occupancy, real.cond_id, ref.occupancy[:4], ref.cond_id[:4])
  with pytest.raises(ValueError, match="together"):
    ev.evaluate_stage1(real.occupancy, real.cond_id, ref.occupancy, ref.cond_id, train_occ=train.occupancy)


def stage2_batch(split, drawn=False):
  """Packed (coords [N, 4], feats [N, 8]) of every shape of `split`: the conditional mean of its
  features, or (drawn) its real features with its own colour draw."""
  coords = ev.occupancy_to_coords(split.occupancy)
  feats = np.concatenate([toy_features(o, c, g if drawn else None)[1]
                          for o, c, g in zip(split.occupancy, split.cond_id, split.colour_gradient)])
  return coords, feats


def test_evaluate_stage2_is_exact(small):
  _, test = small
  data = test.take(slice(0, 24))
  coords, feats = stage2_batch(data)
  exact = ev.evaluate_stage2(coords, feats, data.cond_id, 16)
  assert exact["rmse"] == 0.0 and all(exact[f"rmse_{g}"] == 0.0 for g in ev.FEATURE_GROUPS)
  assert exact["num_voxels"] == len(coords) and exact["num_empty"] == 0
  assert 0.8 < exact["target_rms"] < 1.2
  # Row order within and across samples does not matter.
  perm = np.random.default_rng(0).permutation(len(coords))
  assert ev.evaluate_stage2(coords[perm], feats[perm], data.cond_id, 16)["rmse"] == 0.0
  # A shift of delta on one group scores delta there, 0 elsewhere, and sqrt(3/8) delta overall.
  shifted = feats.copy()
  shifted[:, 5:8] += 0.25
  out = ev.evaluate_stage2(coords, shifted, data.cond_id, 16)
  np.testing.assert_allclose(out["rmse_colour"], 0.25, rtol=1e-6)
  np.testing.assert_allclose(out["rmse"], 0.25 * np.sqrt(3 / 8), rtol=1e-6)
  assert out["rmse_height"] == out["rmse_depth"] == out["rmse_normal"] == 0.0
  np.testing.assert_allclose(out["per_condition"]["rmse_colour"], 0.25, rtol=1e-6)
  # Predicting zeros scores the target's own size.
  zeros = ev.evaluate_stage2(coords, np.zeros_like(feats), data.cond_id, 16)
  for key in ("", "_height", "_depth", "_normal", "_colour"):
    np.testing.assert_allclose(zeros[f"rmse{key}"], exact[f"target_rms{key}"], rtol=1e-12)
  # Features are scored on the voxels given: dropping voxels changes the target, not the check.
  keep = coords[:, 0] != 3
  partial = ev.evaluate_stage2(coords[keep], feats[keep], data.cond_id, 16)
  assert partial["num_empty"] == 1 and partial["num_shapes"] == 24


def test_stage2_distribution_separates_the_mean_from_real_draws(small):
  _, test = small
  first, second = ev.split_halves(test.cond_id, 2)
  real = (*stage2_batch(test.take(first), drawn=True), len(first))
  second_real = ev.evaluate_stage2_distribution(*stage2_batch(test.take(second), drawn=True), len(second), *real)
  mean = ev.evaluate_stage2_distribution(*stage2_batch(test.take(first)), len(first), *real)
  itself = ev.evaluate_stage2_distribution(*real, *real)
  assert abs(itself["fd"]) < 1e-6 and itself["one_nna"] == 0.0       # every shape's nearest is its copy
  assert second_real["fd"] < 0.5 and 0.3 < second_real["one_nna"] < 0.7, second_real
  assert mean["fd"] > 5 * second_real["fd"] and mean["one_nna"] > 0.9, mean
  assert mean["descriptor_mean"]["colour_slope_r"] < 1e-6 < second_real["descriptor_mean"]["colour_slope_r"]
  assert second_real["descriptor_mean"]["colour_residual_g"] < 1e-5              # colour is linear in z
  assert second_real["one_nna_exchangeable"] == set_metrics.exchangeable_1nna(len(second), len(first))
  # An empty sample is counted and left out.
  coords, feats = stage2_batch(test.take(second), drawn=True)
  keep = coords[:, 0] != 0
  assert ev.evaluate_stage2_distribution(coords[keep], feats[keep], len(second), *real)["num_empty"] == 1


def test_evaluate_stage2_rejects_bad_input():
  coords = np.array([[0, 1, 1, 1], [0, 1, 1, 1]])
  with pytest.raises(ValueError, match="repeat"):
    ev.evaluate_stage2(coords, np.zeros((2, 8)), [0], 16)
  with pytest.raises(ValueError, match="sample index"):
    ev.evaluate_stage2(coords + [[1, 0, 0, 0]], np.zeros((2, 8)), [0], 16)
  with pytest.raises(ValueError, match="non-finite"):
    ev.evaluate_stage2(coords[:1], np.full((1, 8), np.nan), [0], 16)


def test_evaluate_pipeline(small):
  train, test = small
  first, second = ev.split_halves(test.cond_id, 2)
  ref, real = test.take(first), test.take(second)
  coords, feats = stage2_batch(real)
  out = ev.evaluate_pipeline(coords, feats, real.cond_id, 16, ref.occupancy, ref.cond_id,
                             train.occupancy, train.family)
  direct = ev.evaluate_stage1(real.occupancy, real.cond_id, ref.occupancy, ref.cond_id,
                              train.occupancy, train.family)
  assert {k: v for k, v in out["stage1"].items() if k != "per_condition"} == {
      k: v for k, v in direct.items() if k != "per_condition"}
  assert out["stage2"]["rmse"] == 0.0


def test_mean_and_spread():
  results = [{"a": 1.0, "b": {"c": np.array([1.0, 2.0])}}, {"a": 3.0, "b": {"c": np.array([3.0, 2.0])}}]
  mean, std = ev.mean_and_spread(results)
  assert mean["a"] == 2.0 and std["a"] == np.sqrt(2)
  np.testing.assert_array_equal(mean["b"]["c"], [2.0, 2.0])
  np.testing.assert_array_equal(std["b"]["c"], [np.sqrt(2), 0.0])
  assert ev.mean_and_spread(results[:1])[1]["a"] == 0.0
