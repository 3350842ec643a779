"""The shipped toy teachers (teachers/): the pinned files, TRELLIS format, float16 on disk and float32
compute, trained with today's condition tokens, a velocity field that depends on the condition, a
short sample equal to the one stored at shipping, and the metrics file's fields."""
import hashlib
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors import safe_open

from conversion import trellis
from mdt_jax.data import toy_condition
from mdt_jax.generation.toy_sampling import smoke_samples
from mdt_jax.sparse import SparseTensor

TEACHERS = Path(__file__).resolve().parents[1] / "teachers"
STEMS = {"ss": TEACHERS / "ss_toy", "slat": TEACHERS / "slat_toy"}
# launch/ship_teachers.py wrote these files (teachers/README.md says how); a reship updates the digests.
SHA256 = {
    "ss_toy.json": "0766d22ceb8c6a4d4ad8771bc2d14b7879191f7ca5f3f46961c4f419b14a0914",
    "ss_toy.safetensors": "110aa650ad8ee4f3697cfe632767a0f5f1d1340aed287c6a5ff651ff149ba5e2",
    "slat_toy.json": "da7448c486c8a317aadd0d3b21c7d6739c226806e69dd21f3da17d5b401d9667",
    "slat_toy.safetensors": "950515c260c1e42ddd5c399679f789c42603ceb81220387f347926bc582019f2",
}


@pytest.mark.parametrize("name", sorted(SHA256))
def test_shipped_files_are_the_pinned_ones(name):
  assert hashlib.sha256((TEACHERS / name).read_bytes()).hexdigest() == SHA256[name]


@pytest.mark.parametrize("stage", sorted(STEMS))
def test_shipped_teacher_is_float16_on_disk_and_float32_in_use(stage):
  stem = STEMS[stage]
  config = json.loads(stem.with_suffix(".json").read_text())
  assert config["args"]["use_fp16"] is False
  with safe_open(str(stem.with_suffix(".safetensors")), "np") as f:
    assert {f.get_tensor(k).dtype for k in f.keys()} == {np.dtype(np.float16)}
  model, params = trellis.load_checkpoint(stem)
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  assert model.cond_channels == toy_condition.DEFAULT_CHANNELS


def test_condition_table_is_the_one_the_teachers_were_trained_with():
  table = json.loads((TEACHERS / "condition_table.json").read_text())
  assert (table["num_tokens"], table["channels"], table["seed"]) == (
      toy_condition.DEFAULT_NUM_TOKENS, toy_condition.DEFAULT_CHANNELS, toy_condition.DEFAULT_TABLE_SEED)
  assert table["sha256"] == toy_condition.table_checksum()


def test_teachers_velocity_depends_on_the_condition():
  cond = toy_condition.condition_tokens(np.array([1, 13]))  # two families
  model, params = trellis.load_checkpoint(STEMS["ss"])
  x = np.random.default_rng(0).standard_normal((1, *model.example_inputs()[0].shape[1:])).astype(np.float32)
  v = np.asarray(model.apply({"params": params}, np.repeat(x, 2, 0), np.full((2,), 0.5, np.float32), cond))
  assert np.all(np.isfinite(v)) and np.abs(v[0] - v[1]).mean() > 0.05 * np.abs(v).mean()

  model, params = trellis.load_checkpoint(STEMS["slat"])
  coords = np.argwhere(np.ones((4, 4, 4), bool)).astype(np.int32) + 6
  packed = np.concatenate([np.repeat([[0], [1]], len(coords), 0), np.tile(coords, (2, 1))], 1)
  feats = np.tile(np.random.default_rng(1).standard_normal((len(coords), model.in_channels)), (2, 1))
  x = SparseTensor.from_packed(packed, feats.astype(np.float32), coarse_levels=len(model.stages))
  out = model.apply({"params": params}, x, np.full((2,), 0.5, np.float32), cond)
  v = np.asarray(out.feats)[np.asarray(out.mask)].reshape(2, len(coords), -1)
  assert np.all(np.isfinite(v)) and np.abs(v[0] - v[1]).mean() > 0.05 * np.abs(v).mean()


def test_short_sample_equals_the_one_stored_at_shipping():
  stored = json.loads((TEACHERS / "smoke.json").read_text())
  ss, slat = trellis.load_checkpoint(STEMS["ss"]), trellis.load_checkpoint(STEMS["slat"])
  out = smoke_samples(*ss, *slat, cfg_strength=stored["cfg_strength"])
  assert (out["conditions"], out["steps"]) == (stored["conditions"], stored["steps"])
  for stage in ("ss", "slat"):
    assert len(out[stage]) == len(stored[stage])
    np.testing.assert_allclose(out[stage], stored[stage], rtol=1e-3, atol=1e-3, err_msg=stage)


def test_metrics_file_has_the_sweeps_and_the_distribution_metrics():
  metrics = json.loads((TEACHERS / "metrics.json").read_text())
  weights, steps = metrics["guidance_weights"], metrics["step_counts"]
  assert weights == [0.0, 0.25, 0.5, 1.0, 3.0, 5.0, 7.5] and steps == [1, 2, 4, 8, 25]
  assert set(metrics["best_w"]) == {"ss", "slat"} and all(w in weights for w in metrics["best_w"].values())
  for w in weights:
    row = metrics["rows"][f"teacher_25_w{w:g}"]
    assert {"1nna", "cov", "fidelity"} <= set(row["stage1"]) and {"fd", "one_nna", "rmse"} <= set(row["stage2"])
  for w in {0.0, *metrics["best_w"].values()}:
    assert all(f"teacher_{k}_w{w:g}" in metrics["rows"] for k in steps)
  assert {"fd", "one_nna"} <= set(metrics["reference"]["stage2_real"])
