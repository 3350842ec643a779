"""TRELLIS.2's DINOv3 encoder against the upstream ``DinoV3FeatureExtractor`` goldens (every encoder
case of the TRELLIS.2 fixture directory): the PIL preprocessing, the patch RoPE, the first layer, the
features of PIL images and of a float tensor; the transformers key map, strict."""
import json

import jax
import numpy as np
import pytest

from conftest import assert_close
from conversion import dinov3
from conversion.common import ConversionError, read_safetensors, tree_to_state_dict
from fixture_scan import TRELLIS2_DIR, cases_of
from mdt_jax import encoders
from mdt_jax.models.dinov3 import PRESETS, DinoV3, patch_rope

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

CASES = cases_of("encoder", TRELLIS2_DIR)


def _close(ours, theirs, what, tol=1e-4):
  assert_close(ours, theirs, atol=tol, rtol=0, relative_to_max=True, what=what)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_trellis2_dinov3_extractor_matches_reference(case):
  model, params = dinov3.load_checkpoint(case.io.with_name(case.name))
  z = np.load(case.io)
  size = json.loads(str(z["meta_json"]))["image_size"]
  images = [z[k] for k in sorted(z.files) if k.startswith("image")]
  pixels = encoders.squash_resize(images, size)
  _close(encoders.imagenet_normalize(pixels), np.moveaxis(z["pil/pixel_values"], 1, -1), "pixel values")
  grid = size // model.patch_size
  cos, sin = patch_rope(grid, grid, model.hidden_size // model.num_attention_heads, model.rope_theta)
  _close(cos, z["pil/rope_cos"], "rope cos")
  _close(sin, z["pil/rope_sin"], "rope sin")
  encode = jax.jit(lambda p, x: encoders.encode_images(model, p, x))
  _close(encode(params, pixels), z["pil/features"], "features of PIL images")
  _close(encode(params, np.moveaxis(z["tensor/image"], 1, -1)), z["tensor/features"], "features of a tensor")
  _, state = model.apply({"params": params}, encoders.imagenet_normalize(pixels), capture_intermediates=True)
  _close(state["intermediates"]["blocks_0"]["__call__"][0], z["pil/layer0_out"], "layer 0 output")


def test_trellis2_dinov3_key_map_is_strict_and_invertible():
  directory = CASES[0].io.with_name(CASES[0].name)
  model, params = dinov3.load_checkpoint(directory)
  state_dict = read_safetensors(directory / "model.safetensors")
  back = dinov3.to_transformers(tree_to_state_dict(jax.device_get(params)), model.num_hidden_layers)
  assert sorted(back) == sorted(state_dict)
  for key, value in state_dict.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  broken = dict(state_dict, **{"layer.0.attention.k_proj.bias": np.zeros(model.hidden_size, np.float32)})
  del broken["layer.1.mlp.up_proj.bias"]
  with pytest.raises(ConversionError, match="missing key 'layer.1.mlp.up_proj.bias'.*\n.*unexpected key "
                                            "'layer.0.attention.k_proj.bias'"):
    dinov3.state_dict_to_params(model, broken, "model.safetensors")
  with pytest.raises(ConversionError, match="unsupported use_gated_mlp=True"):
    dinov3.model_kwargs({**json.loads((directory / "config.json").read_text()), "use_gated_mlp": True}, "config.json")


def test_trellis2_dinov3_vitl16_tokens_at_512():
  model = DinoV3(**PRESETS["dinov3_vitl16"])
  images = jax.ShapeDtypeStruct((1, 512, 512, 3), np.float32)
  params = jax.eval_shape(model.init, jax.random.key(0), images)["params"]
  out = jax.eval_shape(model.apply, {"params": params}, images)
  assert out["x_prenorm"].shape == (1, 1029, 1024)
  # The transformers checkpoint's tensors: patch conv 787,456; cls, 4 registers, mask 6,144; 24 layers
  # of 12,597,248 (q, v, o with bias, k without: 4,197,376; MLP 8,393,728; norms and scales 6,144);
  # final norm 2,048.
  assert sum(int(np.prod(s)) for s in dinov3.state_dict_shapes(model).values()) == 303_129_600
