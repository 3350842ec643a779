"""TRELLIS <-> Flax conversion: exact round trips, full-size key maps, strict errors."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from conversion import trellis
from conversion.common import ConversionError
from fixture_scan import TRELLIS_DIR

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

CHECKPOINTS = sorted(p.with_suffix("") for p in TRELLIS_DIR.glob("*.json")
                     if p.with_suffix(".safetensors").exists())
ROOT = Path(__file__).resolve().parents[1]


def _load(stem):
  try:
    return trellis.load_checkpoint(stem)
  except NotImplementedError as e:
    pytest.xfail(str(e))


@pytest.mark.parametrize("stem", CHECKPOINTS, ids=lambda p: p.name)
def test_round_trip_reproduces_every_tensor(stem, tmp_path):
  model, params = _load(stem)
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
  trellis.save_checkpoint(tmp_path / "out", model, params)
  original, written = load_file(f"{stem}.safetensors"), load_file(tmp_path / "out.safetensors")
  assert sorted(original) == sorted(written)
  for key, value in original.items():
    assert written[key].dtype == value.dtype, key
    np.testing.assert_array_equal(written[key], value, err_msg=key)
  # Every constructor argument is written out explicitly; it rebuilds the same model.
  assert trellis.load_checkpoint(tmp_path / "out")[0] == model


FULL_SIZE = json.loads((TRELLIS_DIR / "trellis_param_shapes.json").read_text())["models"]


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_key_map_matches_trellis(name):
  entry = FULL_SIZE[name]
  try:
    model = trellis.build_model(entry)
  except NotImplementedError as e:
    pytest.xfail(str(e))
  expected = {k: tuple(shape) for k, (shape, _) in entry["params"].items()}  # buffers included
  got = trellis.expected_shapes(model)  # jax.eval_shape: no memory
  assert got == expected
  trainable = sum(int(np.prod(s)) for k, s in got.items() if k not in entry["buffers"])
  assert trainable == entry["num_parameters"]


# ----------------------------------------------------------------------------------------------
# Errors: each names the key or field, and nothing partial is left behind.

SS = TRELLIS_DIR / "ss_flow"


def _copy_with(tmp_path, edit_state=None, edit_config=None, name="bad"):
  state = load_file(f"{SS}.safetensors")
  config = json.loads(Path(f"{SS}.json").read_text())
  if edit_state:
    edit_state(state)
  if edit_config:
    edit_config(config)
  save_file(state, tmp_path / f"{name}.safetensors")
  (tmp_path / f"{name}.json").write_text(json.dumps(config))
  return tmp_path / name


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("blocks.1.mlp.mlp.2.bias"), "missing key 'blocks.1.mlp.mlp.2.bias'"),
    (lambda s: s.__setitem__("blocks.0.extra.weight", np.zeros((2, 2), np.float32)),
     "unexpected key 'blocks.0.extra.weight'"),
    (lambda s: s.__setitem__("input_layer.weight", np.zeros((32, 9), np.float32)),
     "shape mismatch for 'input_layer.weight': checkpoint (32, 9), model (32, 8)"),
    (lambda s: s.__setitem__("out_layer.bias", np.zeros((8,), np.int32)), "dtype mismatch for 'out_layer.bias'"),
    (lambda s: s.__setitem__("pos_emb", s["pos_emb"][::-1].copy()), "'pos_emb' differs"),
])
def test_bad_state_dict_is_named(tmp_path, edit, message):
  stem = _copy_with(tmp_path, edit_state=edit)
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    trellis.load_checkpoint(stem)


def test_unknown_model_and_field_are_named(tmp_path):
  with pytest.raises(ValueError, match="unknown TRELLIS model class 'NoSuchModel'"):
    trellis.load_checkpoint(_copy_with(tmp_path, edit_config=lambda c: c.update(name="NoSuchModel")))
  with pytest.raises(ConversionError, match=r"unknown config field\(s\) \['bogus_field'\]"):
    trellis.load_checkpoint(_copy_with(tmp_path, edit_config=lambda c: c["args"].update(bogus_field=1)))
  with pytest.raises(ConversionError, match=r"missing required config field\(s\) \['resolution'\]"):
    trellis.load_checkpoint(_copy_with(tmp_path, edit_config=lambda c: c["args"].pop("resolution")))
  with pytest.raises(FileNotFoundError, match="nowhere.json"):
    trellis.load_checkpoint(tmp_path / "nowhere")


def test_failed_save_leaves_nothing(tmp_path):
  model, params = trellis.load_checkpoint(SS)
  bad = jax.tree.map(lambda a: a, params)
  bad["out_layer"]["kernel"] = bad["out_layer"]["kernel"][:, :3]
  with pytest.raises(ConversionError, match="shape mismatch for 'out_layer.weight'"):
    trellis.save_checkpoint(tmp_path / "out", model, bad)
  assert list(tmp_path.iterdir()) == []


def test_gradients_use_the_same_key_map():
  model, params = trellis.load_checkpoint(SS)
  grads = jax.tree.map(lambda a: 2 * a, params)
  state = trellis.params_to_state_dict(model, grads)
  np.testing.assert_array_equal(state["blocks.0.self_attn.to_qkv.weight"],
                                2 * load_file(f"{SS}.safetensors")["blocks.0.self_attn.to_qkv.weight"])
  back = trellis.state_dict_to_params(model, trellis.params_to_state_dict(model, params))
  jax.tree.map(np.testing.assert_array_equal, back, params)


def test_cli_round_trip_through_orbax(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  src = TRELLIS_DIR / "ss_flow_fp16"
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True, text=True)
  r = run("conversion.trellis_to_flax", f"--src={src}", f"--dst={tmp_path / 'flax'}")
  assert r.returncode == 0, r.stderr[-2000:]
  r = run("conversion.flax_to_trellis", f"--src={tmp_path / 'flax'}", f"--dst={tmp_path / 'back'}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert (tmp_path / "back.safetensors").read_bytes() == Path(f"{src}.safetensors").read_bytes()
  # An existing destination is refused in both directions, and replaced (whole) with --overwrite.
  written = (tmp_path / "back.json").read_text()
  (tmp_path / "back.json").write_text("{}")
  for args in (("conversion.flax_to_trellis", f"--src={tmp_path / 'flax'}", f"--dst={tmp_path / 'back'}"),
               ("conversion.trellis_to_flax", f"--src={src}", f"--dst={tmp_path / 'flax'}")):
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run(*args)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "; refusing to overwrite" in r.stderr, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    r = run(*args, "--overwrite")
    assert r.returncode == 0, r.stderr[-2000:]
  assert (tmp_path / "back.json").read_text() == written
  assert sorted(p.name for p in tmp_path.iterdir()) == ["back.json", "back.safetensors", "flax"]
  r = run("conversion.trellis_to_flax", f"--src={tmp_path / 'missing'}", f"--dst={tmp_path / 'flax2'}")
  assert r.returncode != 0 and "missing.json" in r.stderr
  assert not (tmp_path / "flax2").exists()
