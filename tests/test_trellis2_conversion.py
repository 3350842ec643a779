"""TRELLIS.2 checkpoints through the one loader and writer: byte-identical round trips, the family
told from the config's fields (or forced), strict named errors, the ``rope_phases`` buffer present or
absent, and the full-size models' key maps and parameter counts (``jax.eval_shape``, no memory)."""
import json

import jax
import numpy as np
import pytest

from conversion import trellis
from conversion.common import ConversionError, read_safetensors
from fixture_scan import TRELLIS2_DIR, TRELLIS_DIR
from mdt_jax.models import registry

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

CHECKPOINTS = sorted(p.with_suffix("") for p in TRELLIS2_DIR.glob("*.json") if p.with_suffix(".safetensors").exists())
FULL_SIZE = json.loads((TRELLIS2_DIR / "trellis2_param_shapes.json").read_text())["models"]


@pytest.mark.parametrize("stem", CHECKPOINTS, ids=lambda p: p.name)
def test_trellis2_load_and_save_gives_back_the_same_bytes(stem, tmp_path):
  model, params = trellis.load_checkpoint(stem)
  assert registry.family_of(model) == "trellis2"
  trellis.save_checkpoint(tmp_path / "out", model, params)
  assert (tmp_path / "out.safetensors").read_bytes() == (stem.parent / f"{stem.name}.safetensors").read_bytes()
  # The written json holds every constructor argument upstream takes, and rebuilds the same model.
  written = json.loads((tmp_path / "out.json").read_text())
  original = json.loads((stem.parent / f"{stem.name}.json").read_text())
  assert written["name"] == original["name"] and written["args"]["dtype"] == original["args"].get("dtype", "float32")
  assert {k: written["args"][k] for k in original["args"]} == original["args"]
  assert trellis.load_checkpoint(tmp_path / "out")[0] == model


def test_trellis2_rope_phases_buffer_is_accepted_and_dropped():
  model, params = trellis.load_checkpoint(TRELLIS2_DIR / "ss_flow")
  state_dict = read_safetensors(TRELLIS2_DIR / "ss_flow.safetensors")
  shape = (model.resolution ** 3, model.head_dim // 2)
  with_buffer = dict(state_dict, rope_phases=np.ones(shape, np.complex64))
  again = trellis.state_dict_to_params(model, with_buffer)
  assert jax.tree.all(jax.tree.map(np.array_equal, again, params))
  assert "rope_phases" not in trellis.params_to_state_dict(model, params)
  with pytest.raises(ConversionError, match="rope_phases.*\\(512, 8\\)"):
    trellis.state_dict_to_params(model, dict(state_dict, rope_phases=np.ones((512, 8), np.complex64)))


def test_trellis2_strict_errors_name_missing_unexpected_and_misshaped_keys(tmp_path):
  model, _ = trellis.load_checkpoint(TRELLIS2_DIR / "shape_flow")
  state_dict = read_safetensors(TRELLIS2_DIR / "shape_flow.safetensors")
  broken = dict(state_dict)
  del broken["blocks.1.modulation"]
  broken["blocks.0.self_attn.to_qkv.weight"] = np.zeros((7, 64), np.float32)
  broken["blocks.0.adaLN_modulation.1.weight"] = np.zeros((384, 64), np.float32)
  with pytest.raises(ConversionError) as error:
    trellis.state_dict_to_params(model, broken, source="shape_flow.safetensors")
  message = str(error.value)
  for expected in ("shape_flow.safetensors", "missing key 'blocks.1.modulation'",
                   "unexpected key 'blocks.0.adaLN_modulation.1.weight'",
                   "shape mismatch for 'blocks.0.self_attn.to_qkv.weight': checkpoint (7, 64), model (192, 64)"):
    assert expected in message


def test_trellis2_family_is_told_by_fields_or_forced():
  args = json.loads((TRELLIS2_DIR / "shape_flow.json").read_text())["args"]
  common = {k: v for k, v in args.items() if k not in ("initialization", "dtype", "rope_freq")}
  with pytest.raises(registry.AmbiguousFamilyError, match="family='trellis2'"):
    registry.build_model({"name": "SLatFlowModel", "args": common})
  assert registry.family_of(registry.build_model({"name": "SLatFlowModel", "args": common}, family="trellis2")) \
      == "trellis2"
  with pytest.raises(registry.AmbiguousFamilyError, match="both families"):
    registry.build_model({"name": "SLatFlowModel", "args": {**args, "patch_size": 2}})
  v1 = json.loads((TRELLIS_DIR / "ss_flow.json").read_text())
  assert registry.family_of(registry.build_model(v1)) == "trellis"
  with pytest.raises(registry.ModelConfigError, match="unknown config field"):
    registry.build_model(v1, family="trellis2")


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_trellis2_full_size_key_map_and_parameter_count(name):
  entry = FULL_SIZE[name]
  model = trellis.build_model(entry)
  assert registry.family_of(model) == "trellis2"
  expected = {k: tuple(shape) for k, (shape, _) in entry["params"].items() if k not in entry["buffers"]}
  got = trellis.expected_shapes(model)  # jax.eval_shape: no memory
  assert got == expected
  assert sum(int(np.prod(s)) for s in got.values()) == entry["num_parameters"]
  assert {k: tuple(s) for k, s in model.recomputed_buffers().items()} == {
      k: tuple(entry["params"][k][0]) for k in entry["buffers"]}
