"""The shipped toy teachers (teachers/): TRELLIS format, float16 on disk and float32 compute, trained
with today's condition tokens, and a velocity field that depends on the condition."""
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors import safe_open

from conversion import trellis
from mdt_jax.data import toy_condition
from mdt_jax.sparse import SparseTensor

TEACHERS = Path(__file__).resolve().parents[1] / "teachers"
STEMS = {"ss": TEACHERS / "ss_toy", "slat": TEACHERS / "slat_toy"}


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
