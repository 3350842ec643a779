"""DINOv2 checkpoint conversion: full-size shapes, exact round trip, strictness, the .pth path."""
from __future__ import annotations

import json
import sys

import jax
import numpy as np
import pytest

import dinov2_fixtures
from conversion.common import ConversionError, read_safetensors, write_safetensors
from conversion.dinov2 import load_checkpoint, model_from_config, param_shapes, params_to_state_dict, \
    state_dict_shapes

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

SETS, _ = dinov2_fixtures.scan()  # scan problems are reported by test_dinov2.py::test_fixture_scan
SET_PARAMS = [pytest.param(s, id=s.root.name) for s in SETS]


def test_full_size_shapes_match_upstream_listing():
  listing = json.loads(dinov2_fixtures.shapes_file().read_text())
  model = model_from_config("dinov2_vitl14_reg")
  want = {p["name"]: tuple(p["shape"]) for p in listing["params"]}
  assert state_dict_shapes(model) == want
  leaves = jax.tree.leaves(param_shapes(model))
  assert {str(leaf.dtype) for leaf in leaves} == {p["dtype"] for p in listing["params"]} == {"float32"}
  assert sum(int(np.prod(leaf.shape)) for leaf in leaves) == listing["total_params"] == 304_372_736
  assert len(leaves) == listing["num_tensors"]
  assert model_from_config() == model  # the default preset


@pytest.mark.parametrize("fixture_set", SET_PARAMS)
def test_round_trip_is_exact(fixture_set):
  state_dict = read_safetensors(fixture_set.safetensors)
  _, params = load_checkpoint(fixture_set.safetensors, fixture_set.config)
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
  back = params_to_state_dict(params)
  assert back.keys() == state_dict.keys()
  for key, value in state_dict.items():
    assert back[key].dtype == value.dtype and np.array_equal(back[key], value), key


def _tiny_set():
  if not SETS:
    pytest.fail("no DINOv2 fixture set found")
  return SETS[0]


@pytest.mark.parametrize("edit,message", [
    (lambda sd: sd.pop("blocks.0.ls1.gamma"), "missing key 'blocks.0.ls1.gamma'"),
    (lambda sd: sd.update(head_weight=np.zeros(3, np.float32)), "unexpected key 'head_weight'"),
    (lambda sd: sd.update(pos_embed=sd["pos_embed"][:, :-1]), "shape mismatch for 'pos_embed'"),
    (lambda sd: sd.update(cls_token=sd["cls_token"].astype(np.int32)), "dtype mismatch for 'cls_token'"),
])
def test_strict_state_dict(tmp_path, edit, message):
  fixture_set = _tiny_set()
  state_dict = read_safetensors(fixture_set.safetensors)
  edit(state_dict)
  path = tmp_path / "edited.safetensors"
  write_safetensors(path, state_dict)
  with pytest.raises(ConversionError, match=message):
    load_checkpoint(path, fixture_set.config)


def test_default_preset_refuses_tiny_weights():
  with pytest.raises(ConversionError, match="shape mismatch for 'pos_embed'"):
    load_checkpoint(_tiny_set().safetensors)


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.update(use_swiglu=True), "unknown config field 'use_swiglu'"),
    (lambda a: a.pop("num_heads"), "missing config field.*'num_heads'"),
    (lambda a: a.update(interpolate_offset=0.1), "unsupported interpolate_offset=0.1"),
    (lambda a: a.update(ffn_layer="swiglufused"), "unsupported ffn_layer"),
    (lambda a: a.update(act_layer="GELU(approximate='tanh')"), "unsupported act_layer"),
])
def test_strict_config(tmp_path, edit, message):
  fixture_set = _tiny_set()
  config = json.loads(fixture_set.config.read_text())
  edit(config["constructor_args"])
  path = tmp_path / "config.json"
  path.write_text(json.dumps(config))
  with pytest.raises(ConversionError, match=message):
    load_checkpoint(fixture_set.safetensors, path)


def test_unknown_preset_and_format(tmp_path):
  with pytest.raises(ConversionError, match="unknown DINOv2 config 'dinov2_vitx'"):
    model_from_config("dinov2_vitx")
  with pytest.raises(ConversionError, match="unknown checkpoint format '.bin'"):
    load_checkpoint(tmp_path / "model.bin")


def test_pth_without_torch_names_the_extra(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
  path = tmp_path / "model.pth"
  path.write_bytes(b"never read")
  with pytest.raises(ImportError, match=r"pip install '\.\[torch\]'"):
    load_checkpoint(path)


@pytest.mark.parametrize("fixture_set", SET_PARAMS)
def test_pth_matches_safetensors(fixture_set):
  pytest.importorskip("torch")
  if fixture_set.pth is None:
    pytest.skip(f"no .pth weights in {fixture_set.root}")
  _, from_pth = load_checkpoint(fixture_set.pth, fixture_set.config)
  _, from_st = load_checkpoint(fixture_set.safetensors, fixture_set.config)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), from_pth, from_st))
