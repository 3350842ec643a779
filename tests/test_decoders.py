"""The SLat VAE decoders against upstream TRELLIS goldens (decoder fixtures README, sections 1-4, 8), their
conversion both ways, the full-size shapes, and mesh extraction on analytic fields.

Cases are found by scanning ``tests/fixtures/trellis_decoders`` (``MDT_DECODER_FIXTURES`` points elsewhere).
Tolerance: 1e-4 of the reference's largest value (the README's float64 re-derivation is within 4.2e-7).
"""
import json

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import assert_close
from conversion import trellis
from conversion.common import ConversionError
from fixture_scan import DECODER_DIR, cases_of
from mdt_jax.models.slat_decoders import SLatGaussianDecoder
from mdt_jax.representations import gaussians, mesh
from mdt_jax.sparse import SparseTensor

pytestmark = pytest.mark.parity
TOL = 1e-4
CASES = cases_of("model", DECODER_DIR)
GAUSSIAN_KEYS = {"xyz": "get_xyz", "scaling": "get_scaling", "rotation": "get_rotation", "opacity": "get_opacity",
                 "features_dc": "get_features", "color": "color", "_xyz": "_xyz", "_features_dc": "_features_dc",
                 "_scaling": "_scaling", "_rotation": "_rotation", "_opacity": "_opacity"}


def _close(actual, expected, what):
  assert_close(actual, expected, atol=TOL, rtol=0, relative_to_max=True, what=what)


def _partition(ids):
  """Window ids -> the partition of the rows (a set of frozensets): only the grouping matters."""
  ids = np.asarray(ids)
  return {frozenset(np.flatnonzero(ids == i).tolist()) for i in np.unique(ids)}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_decoder_matches_upstream(case):
  model, params = trellis.load_checkpoint(case.stem)
  z = np.load(case.io)
  x = SparseTensor.from_packed(z["coords"], z["feats"])
  out, state = model.apply({"params": params}, x, capture_intermediates=True, mutable=["intermediates"])
  coords, feats = out.to_packed()
  np.testing.assert_array_equal(coords, z["out_coords"] if "out_coords" in z else z["coords"])
  _close(feats, z["out"], f"{case} out")
  captured = state["intermediates"]
  n = len(z["coords"])
  for i in range(model.num_blocks):
    if f"blocks.{i}" in z:
      _close(np.asarray(captured[f"blocks_{i}"]["__call__"][0])[:n], z[f"blocks.{i}"], f"{case} blocks.{i}")
  for i in range(2):
    if f"upsample.{i}" in z:
      up = captured[f"upsample_{i}"]["__call__"][0]
      up_coords, up_feats = up.to_packed()
      if f"upsample.{i}_coords" in z:
        np.testing.assert_array_equal(up_coords, z[f"upsample.{i}_coords"])
      _close(up_feats, z[f"upsample.{i}"], f"{case} upsample.{i}")

  reps = model.apply({"params": params}, out, method="to_representation")
  assert len(reps) == x.batch_size
  for b, rep in enumerate(reps):
    if f"gauss/{b}/get_xyz" in z:
      for ours, theirs in GAUSSIAN_KEYS.items():
        _close(rep[ours], z[f"gauss/{b}/{theirs}"], f"{case} sample {b} {ours}")
    if f"strivec/{b}/trivec" in z:
      for key in ("position", "trivec", "density", "features_dc", "depth"):
        _close(rep[key], z[f"strivec/{b}/{key}"], f"{case} sample {b} {key}")
    if case.model_name.endswith("MeshDecoder"):
      assert rep["faces"].shape[1:] == (3,) and np.all(rep["faces"] < len(rep["vertices"]))
      assert np.all(np.abs(rep["vertices"]) <= 0.5 + 1e-6)


@pytest.mark.parametrize("case", [c for c in CASES if "window/0/window_id" in np.load(c.io)], ids=str)
def test_decoder_windows_match_upstream(case):
  """Swin partitions: block i's windows group the voxels as upstream's (shift added, no roll)."""
  from mdt_jax.models.swin import window_ids
  model, _ = trellis.load_checkpoint(case.stem)
  z = np.load(case.io)
  x = SparseTensor.from_packed(z["coords"], z["feats"])
  n = len(z["coords"])
  for i in range(model.num_blocks):
    if f"window/{i}/window_id" not in z:
      continue
    ours = window_ids(x.coords, x.mask, window_size=model.window_size, shift=(model.window_size // 2) * (i % 2),
                      resolution=model.resolution)
    assert _partition(np.asarray(ours)[:n]) == _partition(z[f"window/{i}/window_id"])


@pytest.mark.parametrize("case", CASES, ids=str)
def test_decoder_checkpoint_round_trip_gives_back_the_bytes(case, tmp_path):
  model, params = trellis.load_checkpoint(case.stem)
  stored = load_file(f"{case.stem}.safetensors")
  dtype = next(iter(stored.values())).dtype
  trellis.save_checkpoint(tmp_path / "out", model, params, storage_dtype=dtype)
  assert (tmp_path / "out.safetensors").read_bytes() == case.stem.with_suffix(".safetensors").read_bytes()
  assert trellis.load_checkpoint(tmp_path / "out")[0] == model


FULL_SIZE = json.loads((DECODER_DIR / "trellis_decoder_param_shapes.json").read_text())["models"]


@pytest.mark.parametrize("name", sorted(FULL_SIZE))
def test_full_size_decoder_key_map_matches_trellis(name):
  """The released configs (``ElasticSLat*`` names) build under ``jax.eval_shape`` with upstream's names,
  shapes and parameter counts."""
  entry = FULL_SIZE[name]
  model = trellis.build_model(entry)
  assert trellis.expected_shapes(model) == {k: tuple(shape) for k, (shape, _) in entry["params"].items()}
  counts = {k: int(np.prod(s)) for k, s in trellis.expected_shapes(model).items() if k not in entry["buffers"]}
  assert sum(counts.values()) == entry["num_parameters"]


def _perturbed_gaussian_case():
  return next(c for c in CASES if c.model_name.endswith("GaussianDecoder") and "hammersley" in np.load(c.io))


def test_decoder_bad_checkpoint_and_input_are_named(tmp_path):
  gs = _perturbed_gaussian_case()
  state = load_file(f"{gs.stem}.safetensors")
  config = json.loads(gs.stem.with_suffix(".json").read_text())
  from safetensors.numpy import save_file
  bad = {k: v for k, v in state.items() if k != "offset_perturbation"}
  save_file(bad, str(tmp_path / "bad.safetensors"))
  (tmp_path / "bad.json").write_text(json.dumps(config))
  with pytest.raises(ConversionError, match="missing key 'offset_perturbation'"):
    trellis.load_checkpoint(tmp_path / "bad")
  save_file({**state, "offset_perturbation": state["offset_perturbation"] + 0.5}, str(tmp_path / "bad.safetensors"))
  with pytest.raises(ValueError, match="offset_perturbation"):
    trellis.load_checkpoint(tmp_path / "bad")
  model, params = trellis.load_checkpoint(gs.stem)
  wrong = SparseTensor.from_packed(np.zeros((1, 4), np.int32), np.zeros((1, model.latent_channels + 1), np.float32))
  with pytest.raises(ValueError, match=f"feats \\[cap, {model.latent_channels}\\]"):
    model.apply({"params": params}, wrong)
  with pytest.raises(ValueError, match="representation_config misses"):
    SLatGaussianDecoder(64, 32, 8, 1, representation_config={"lr": {}}).init(
        jax.random.key(0), *SLatGaussianDecoder(64, 32, 8, 1).example_inputs())


def test_decoder_offset_perturbation_is_hammersley():
  gs = _perturbed_gaussian_case()
  z = np.load(gs.io)
  g = len(z["hammersley"])
  voxel_size = json.loads(gs.stem.with_suffix(".json").read_text())["args"]["representation_config"]["voxel_size"]
  np.testing.assert_array_equal(gaussians.hammersley(g), z["hammersley"])
  np.testing.assert_allclose(gaussians.offset_perturbation(g, voxel_size), z["offset_perturbation"], rtol=1e-6)


def _sphere_cells(g, radius, centre=(0.0, 0.0, 0.0)):
  ijk = np.stack(np.meshgrid(*[np.arange(g)] * 3, indexing="ij"), -1).reshape(-1, 3)
  corners = (ijk[:, None, :] + mesh.CORNERS[None]) / g - 0.5
  return ijk, np.linalg.norm(corners - np.asarray(centre), axis=-1) - radius, corners


def _check_closed_outward(vertices, faces):
  edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
  _, directed = np.unique(edges, axis=0, return_counts=True)
  _, undirected = np.unique(np.sort(edges, 1), axis=0, return_counts=True)
  assert np.all(undirected == 2) and np.all(directed == 1), "not a closed, consistently oriented surface"
  assert len(vertices) - len(undirected) + len(faces) == 2, "Euler characteristic of a sphere is 2"
  return np.sum(np.einsum("ij,ij->i", vertices[faces[:, 0]], np.cross(vertices[faces[:, 1]], vertices[faces[:, 2]]))) / 6


def test_decoder_mesh_extraction_sphere_is_watertight():
  """An analytic sphere SDF on the cells of a 24^3 grid: closed, outward, radius within half a cell; a
  constant deformation moves it by exactly that much; colours interpolate."""
  g, r = 24, 0.3
  ijk, sdf, corners = _sphere_cells(g, r, centre=(0.02, -0.01, 0.0))
  colour = np.repeat((corners[..., :1] + 0.5), 6, axis=-1)                          # red = x + 0.5
  feats = np.concatenate([sdf + 1.0 / g, np.zeros((len(ijk), 24 + 21)), colour.reshape(len(ijk), 48)], axis=1)
  coords = np.concatenate([np.zeros((len(ijk), 1), np.int64), ijk], 1)
  out = mesh.extract_mesh(coords, feats, grid_resolution=g, use_color=True)
  v, f = out["vertices"], out["faces"]
  volume = _check_closed_outward(v, f)
  radius = np.linalg.norm(v - np.array([0.02, -0.01, 0.0]), axis=1)
  assert np.all(np.abs(radius - r) < 0.5 / g), (radius.min(), radius.max())
  assert abs(volume - 4 / 3 * np.pi * r ** 3) < 0.05 * 4 / 3 * np.pi * r ** 3
  np.testing.assert_allclose(out["vertex_attrs"][:, 0], v[:, 0] + 0.5, atol=1e-5)
  shift = np.arctanh(0.5)                                                           # quarter of a cell along +x
  feats[:, 8:32] = np.tile([shift, 0, 0], 8)
  moved = mesh.extract_mesh(coords, feats, grid_resolution=g, use_color=False)
  np.testing.assert_allclose(moved["vertices"], v + [0.25 / g, 0, 0], atol=1e-6)
  np.testing.assert_array_equal(moved["faces"], f)


def test_decoder_gaussians_write_a_splat_ply(tmp_path):
  """Decoded Gaussians -> the 3DGS PLY layout: logit opacities, log scales, positions and rotations turned
  from z-up to y-up; read back, a viewer's activations give the Gaussians again. Non-finite ones are refused."""
  from mdt_jax.representations import ply
  from mdt_jax.render.rasterizer import _quat_to_rotmat
  gs = next(c for c in CASES if c.model_name.endswith("GaussianDecoder"))
  model, params = trellis.load_checkpoint(gs.stem)
  z = np.load(gs.io)
  out = model.apply({"params": params}, SparseTensor.from_packed(z["coords"], z["feats"]))
  g = model.apply({"params": params}, out, method="to_representation")[0]
  ply.write_gaussians_ply(tmp_path / "g.ply", g)
  back = ply.read_gaussians_ply(tmp_path / "g.ply")
  assert list(back) == list(ply.PROPERTIES) and len(back["x"]) == len(g["xyz"])
  xyz = np.asarray(g["xyz"])
  np.testing.assert_allclose(np.stack([back["x"], back["y"], back["z"]], 1), xyz[:, [0, 2, 1]] * [1, -1, 1], atol=1e-7)
  np.testing.assert_allclose(1 / (1 + np.exp(-back["opacity"])), np.asarray(g["opacity"])[:, 0], rtol=1e-5)
  np.testing.assert_allclose(np.exp(np.stack([back[f"scale_{i}"] for i in range(3)], 1)), g["scaling"], rtol=1e-5)
  np.testing.assert_allclose(np.stack([back[f"f_dc_{i}"] for i in range(3)], 1), np.asarray(g["features_dc"])[:, 0])
  rot = np.asarray(_quat_to_rotmat(np.stack([back[f"rot_{i}"] for i in range(4)], 1)))
  np.testing.assert_allclose(rot, ply.Z_UP_TO_Y_UP @ np.asarray(_quat_to_rotmat(g["rotation"])), atol=1e-5)
  with pytest.raises(ValueError, match="non-finite Gaussian field\\(s\\) \\['scaling'\\]"):
    ply.write_gaussians_ply(tmp_path / "bad.ply", {**g, "scaling": np.full_like(g["scaling"], np.nan)})


def test_decoder_float16_compute_is_trellis_use_fp16():
  """``dtype=float16`` (TRELLIS's use_fp16: blocks in float16, input/output layers and norms in float32)
  keeps float32 params and a float32 output within 1e-2 of the float32 golden."""
  gs = next(c for c in CASES if c.model_name.endswith("GaussianDecoder"))
  model, params = trellis.load_checkpoint(gs.stem, dtype=jax.numpy.float16)
  assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(params))
  z = np.load(gs.io)
  _, feats = model.apply({"params": params}, SparseTensor.from_packed(z["coords"], z["feats"])).to_packed()
  assert feats.dtype == np.float32
  assert_close(feats, z["out"], atol=1e-2, rtol=0, relative_to_max=True, what="float16 compute")


def test_decoder_mesh_writes_a_glb(tmp_path):
  """A decoded-style mesh (the analytic sphere) -> a glTF 2.0 binary with vertex colours, turned to y-up;
  read back, vertices, colours and faces come out as written."""
  from mdt_jax.representations import glb, ply
  ijk, sdf, corners = _sphere_cells(12, 0.3)
  colour = np.repeat(corners[..., :1] + 0.5, 6, axis=-1).reshape(len(ijk), 48)
  feats = np.concatenate([sdf + 1.0 / 12, np.zeros((len(ijk), 45)), colour], axis=1)
  m = mesh.extract_mesh(np.concatenate([np.zeros((len(ijk), 1), np.int64), ijk], 1), feats, grid_resolution=12,
                        use_color=True)
  glb.write_mesh_glb(tmp_path / "m.glb", m["vertices"], m["faces"], m["vertex_colors"])
  back = glb.read_mesh_glb(tmp_path / "m.glb")
  np.testing.assert_allclose(back["vertices"], m["vertices"] @ ply.Z_UP_TO_Y_UP.T, atol=1e-7)
  np.testing.assert_array_equal(back["faces"], m["faces"])
  np.testing.assert_allclose(back["vertex_colors"], m["vertex_colors"], atol=0.5 / 255)  # 8-bit colours
  with pytest.raises(ValueError, match="face indices"):
    glb.write_mesh_glb(tmp_path / "bad.glb", m["vertices"], m["faces"] + len(m["vertices"]))


def test_decoder_windowed_attention_implementations_agree(monkeypatch):
  """Past 256 voxels the CPU attention is the blocked one: on two 536-voxel shells (random weights, the
  gs_dec config) it gives the plain formula's output (windows sorted contiguous, other windows skipped)."""
  from conftest import random_zero_inits
  from mdt_jax.models.registry import init_params
  gs = next(c for c in CASES if c.model_name.endswith("GaussianDecoder"))
  model = trellis.build_model(json.loads(gs.stem.with_suffix(".json").read_text()))
  params = random_zero_inits(init_params(model, jax.random.key(0)))
  ijk = np.stack(np.meshgrid(*[np.arange(model.resolution)] * 3, indexing="ij"), -1).reshape(-1, 3)
  shell = ijk[np.abs(np.linalg.norm(ijk + 0.5 - model.resolution / 2, axis=1) - 6) < 0.6]
  coords = np.concatenate([np.concatenate([np.full((len(shell), 1), b), shell], 1) for b in range(2)]).astype(np.int32)
  x = SparseTensor.from_packed(coords, np.random.default_rng(0).normal(size=(len(coords), 8)).astype(np.float32))
  outs = {}
  for impl in ("xla", "blocked"):
    monkeypatch.setenv("MDT_ATTENTION", impl)
    outs[impl] = model.apply({"params": params}, x).to_packed()[1]
  _close(outs["blocked"], outs["xla"], "blocked vs xla attention")


def test_decoder_full_attention_is_one_window_per_sample():
  """``attn_mode="full"`` (each sample attends to all its voxels) equals swin windows wider than the grid."""
  gs = next(c for c in CASES if c.model_name.endswith("GaussianDecoder"))
  model, params = trellis.load_checkpoint(gs.stem)
  z = np.load(gs.io)
  x = SparseTensor.from_packed(z["coords"], z["feats"])
  full = model.clone(attn_mode="full").apply({"params": params}, x).to_packed()[1]
  wide = model.clone(window_size=2 * model.resolution).apply({"params": params}, x).to_packed()[1]
  _close(full, wide, "full vs one-window swin")
  from mdt_jax.models.swin import window_ids
  windows = window_ids(x.coords, x.mask, window_size=model.window_size, shift=0, resolution=model.resolution)
  if len(np.unique(np.asarray(windows)[np.asarray(x.mask)])) > x.batch_size:              # windows matter here
    assert np.max(np.abs(full - model.apply({"params": params}, x).to_packed()[1])) > 1e-3
