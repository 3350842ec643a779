"""The Gaussian rasterizer against TRELLIS's renders (decoder fixtures README, section 5): projection,
images, batching over views, the empty view, capacity overflow, and gradients against finite differences.

Cases: ``gs_render_*.io.npz`` found by scanning ``tests/fixtures/trellis_decoders`` (``MDT_DECODER_FIXTURES``).
Images within 1e-4 absolute, except where a float32 threshold flips (then at most 5e-3, on < 0.5% of values).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fixture_scan import DECODER_DIR, cases_of
from mdt_jax.render import count_tile_pairs, orbit_cameras, pair_capacity, render_gaussians
from mdt_jax.render import rasterizer

pytestmark = pytest.mark.parity
CASES = cases_of("render", DECODER_DIR)
GAUSSIANS = ("xyz", "scaling", "rotation", "opacity", "color")


def _assert_image_close(actual, expected, what):
  diff = np.abs(np.asarray(actual, np.float64) - np.asarray(expected, np.float64))
  flipped = diff > 1e-4
  assert diff.max() <= 5e-3 and flipped.mean() < 0.005, (
      f"{what}: max |diff| {diff.max():.3g}, {flipped.mean():.2%} of values above 1e-4")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_render_matches_upstream(case):
  z = np.load(case.io)
  cams = json.loads(str(z["meta_json"])).get("cameras")
  if cams:                                  # orbit cameras, as TRELLIS's camera code builds them
    extrinsics, intrinsics = orbit_cameras(cams["yaws_deg"], cams["pitch_deg"], cams["radius"], cams["fov_deg"])
    np.testing.assert_allclose(extrinsics, z["extrinsics"], atol=1e-6)
    np.testing.assert_allclose(intrinsics, z["intrinsics"], atol=1e-6)
  height, width = z["rgb"].shape[-2:]
  n = len(z["xyz"])
  for v in range(len(z["extrinsics"])):
    proj = rasterizer.project(*(jnp.asarray(z[k]) for k in GAUSSIANS[:4]), jnp.ones(n, bool),
                              jnp.asarray(z["extrinsics"][v]), jnp.asarray(z["intrinsics"][v]), height, width)
    valid = z["proj/valid"][v]
    np.testing.assert_array_equal(np.asarray(proj["valid"]), valid)
    np.testing.assert_allclose(np.asarray(proj["mean2d"])[valid], z["proj/mean2d"][v][valid], atol=1e-4)
    np.testing.assert_allclose(np.asarray(proj["conic"])[valid], z["proj/conic"][v][valid], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(proj["coef"])[valid], z["proj/coef"][v][valid], atol=1e-5)
    np.testing.assert_array_equal(np.asarray(proj["radius"])[valid], z["proj/radius"][v][valid])
  rgb, alpha = render_gaussians(*(z[k] for k in GAUSSIANS), extrinsics=z["extrinsics"], intrinsics=z["intrinsics"],
                                height=height, width=width, bg=z["bg"])
  assert rgb.shape == (len(z["extrinsics"]), height, width, 3) and alpha.shape == (len(z["extrinsics"]), height, width)
  _assert_image_close(rgb, np.moveaxis(z["rgb"], 1, -1), f"{case} rgb")
  _assert_image_close(alpha, z["alpha"], f"{case} alpha")
  # One view alone gives the same image; fewer Gaussians in the same bucket reuse the compiled program.
  compiled = rasterizer._render_views._cache_size()
  one, _ = render_gaussians(*(z[k] for k in GAUSSIANS), extrinsics=z["extrinsics"][1], intrinsics=z["intrinsics"][1],
                            height=height, width=width, bg=z["bg"])
  np.testing.assert_allclose(one, rgb[1], atol=1e-6)
  render_gaussians(*(z[k][: n - 1] for k in GAUSSIANS), extrinsics=z["extrinsics"][1],
                   intrinsics=z["intrinsics"][1], height=height, width=width, bg=z["bg"])
  assert rasterizer._render_views._cache_size() <= compiled + 1


def _scene(n=10, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(n, 4))
  return (rng.uniform(-0.25, 0.25, (n, 3)).astype(np.float32), rng.uniform(0.03, 0.08, (n, 3)).astype(np.float32),
          (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32), rng.uniform(0.3, 0.8, n).astype(np.float32),
          rng.uniform(0, 1, (n, 3)).astype(np.float32))


def test_render_empty_view_is_background():
  bg = np.array([0.25, 0.5, 1.0], np.float32)
  extrinsics, intrinsics = orbit_cameras([0], 30, 2, 40)
  xyz, scaling, rotation, opacity, color = _scene()
  behind = -2.5 * extrinsics[0, 2, :3]                                     # every Gaussian behind the camera
  for args in [(xyz * 0.1 + behind, scaling, rotation, opacity, color),
               tuple(np.zeros((0,) + a.shape[1:], np.float32) for a in (xyz, scaling, rotation, opacity, color))]:
    rgb, alpha = render_gaussians(*args, extrinsics=extrinsics[0], intrinsics=intrinsics[0], height=20, width=36, bg=bg)
    np.testing.assert_array_equal(rgb, np.broadcast_to(bg, (20, 36, 3)))
    np.testing.assert_array_equal(alpha, np.zeros((20, 36)))


def test_render_capacity_overflow_and_traced_inputs_are_named():
  extrinsics, intrinsics = orbit_cameras([0], 30, 2, 40)
  scene = _scene()
  pairs = count_tile_pairs(*scene[:4], extrinsics=extrinsics, intrinsics=intrinsics, height=64, width=64)
  assert pairs[0] > 0
  rgb, alpha = render_gaussians(*scene, extrinsics=extrinsics[0], intrinsics=intrinsics[0], height=64, width=64,
                                bg=np.zeros(3), capacity=int(pairs[0]) // 2)
  assert np.all(np.isnan(rgb)) and np.all(np.isnan(alpha))
  with pytest.raises(ValueError, match="capacity="):
    jax.jit(lambda xyz: render_gaussians(xyz, *scene[1:], extrinsics=extrinsics[0], intrinsics=intrinsics[0],
                                         height=64, width=64, bg=np.zeros(3)))(scene[0])


def test_render_gradients_match_finite_differences(monkeypatch):
  """Directional derivatives of a weighted sum of rgb and alpha for each Gaussian field, against central
  differences. The 1/255 alpha skip is a jump that finite differences see and gradients do not (the
  pixels where it flips move with the Gaussians); it is set to 0 here and the program retraced."""
  monkeypatch.setattr(rasterizer, "ALPHA_MIN", 0.0)
  rasterizer._render_views.clear_cache()
  rng = np.random.default_rng(1)
  params = tuple(jnp.asarray(a) for a in _scene(8))
  extrinsics, intrinsics = orbit_cameras([30], 20, 2, 40)
  h = w = 32
  capacity = pair_capacity(count_tile_pairs(*params[:4], extrinsics=extrinsics, intrinsics=intrinsics,
                                            height=h, width=w).max())
  w_rgb, w_alpha = rng.normal(size=(h, w, 3)).astype(np.float32), rng.normal(size=(h, w)).astype(np.float32)

  def loss(params):
    rgb, alpha = render_gaussians(*params, extrinsics=extrinsics[0], intrinsics=intrinsics[0], height=h, width=w,
                                  bg=jnp.array([0.2, 0.3, 0.4]), capacity=capacity)
    return jnp.sum(rgb * w_rgb) + jnp.sum(alpha * w_alpha)

  grads = jax.grad(loss)(params)
  value = jax.jit(loss)
  eps = 3e-4
  for i, name in enumerate(GAUSSIANS):
    d = rng.normal(size=params[i].shape).astype(np.float32)
    plus = list(params)
    minus = list(params)
    plus[i], minus[i] = params[i] + eps * d, params[i] - eps * d
    fd = (float(value(tuple(plus))) - float(value(tuple(minus)))) / (2 * eps)
    analytic = float(jnp.sum(grads[i] * d))
    assert abs(fd - analytic) <= 1e-2 * abs(analytic) + 1e-3, (name, fd, analytic)
  rasterizer._render_views.clear_cache()


@pytest.mark.parametrize("case", CASES, ids=str)
def test_render_partial_tiles_give_the_crop(case):
  """A 40 x 50 image (partial tiles on both axes) with the same pixel focal length and centre is the crop
  of the full render, wherever the EWA clamp (1.3 tan(fov / 2), which depends on the image size) does not
  bind."""
  z = np.load(case.io)
  size = z["rgb"].shape[-1]
  h, w = 40, 50
  k = z["intrinsics"][0].astype(np.float64)
  crop = np.array([[k[0, 0] * size / w, 0, k[0, 2] * size / w], [0, k[1, 1] * size / h, k[1, 2] * size / h], [0, 0, 1]])
  view = z["xyz"] @ z["extrinsics"][0][:3, :3].T + z["extrinsics"][0][:3, 3]
  tangents = np.abs(view[:, :2] / view[:, 2:])
  if np.any(tangents > 1.3 * 0.5 / np.diag(crop)[:2]):
    pytest.skip("some Gaussian lies where the clamp binds")
  rgb, alpha = render_gaussians(*(z[k] for k in GAUSSIANS), extrinsics=z["extrinsics"][0], intrinsics=crop,
                                height=h, width=w, bg=z["bg"])
  _assert_image_close(rgb, np.moveaxis(z["rgb"][0], 0, -1)[:h, :w], f"{case} cropped rgb")
  _assert_image_close(alpha, z["alpha"][0][:h, :w], f"{case} cropped alpha")


def test_render_sample_assets_are_written(tmp_path):
  """A sample's Gaussians and mesh -> its PLY, GLB, PNG of 4 views and turntable mp4 (read back: frame count,
  size, frame 0 is the PNG's first view up to compression); existing files are refused unless overwrite;
  a non-finite sample is named and nothing of it is written."""
  from mdt_jax.render.assets import NonFiniteAsset, write_sample_assets
  from mdt_jax.representations import mesh
  z = np.load(CASES[0].io)                                 # a render case's Gaussians (and its compiled program)
  g = {k: z[k] for k in GAUSSIANS + ("features_dc",)}
  size = z["rgb"].shape[-1]
  cells = np.stack(np.meshgrid(*[np.arange(8)] * 3, indexing="ij"), -1).reshape(-1, 3)
  sdf = np.linalg.norm((cells[:, None] + mesh.CORNERS[None]) / 8 - 0.5, axis=-1) - 0.3
  m = mesh.dual_contour(cells, sdf, np.zeros(sdf.shape + (3,)), np.full(sdf.shape + (6,), 0.5), 8)
  paths = write_sample_assets(tmp_path, 3, g, m, resolution=size, turntable_frames=12)
  assert sorted(p.name for p in paths.values()) == ["sample_3.png", "sample_3_gaussians.ply", "sample_3_mesh.glb",
                                                    "sample_3_turntable.mp4"]
  import imageio.v2 as imageio
  from PIL import Image
  image = np.asarray(Image.open(paths["views"]))
  assert image.shape == (size, 4 * size, 3) and image.max() > 0
  with imageio.get_reader(str(paths["turntable"])) as video:
    frames = np.stack(list(video.iter_data()))
  assert frames.shape == (12, size, size, 3)
  assert np.mean(np.abs(frames[0].astype(float) - image[:, :size])) < 8     # H.264 is lossy
  assert np.mean(np.abs(frames[3].astype(float) - image[:, size:2 * size])) < 8   # frame 3: yaw 90
  with pytest.raises(FileExistsError, match="sample 3"):
    write_sample_assets(tmp_path, 3, g, m, resolution=size)
  with pytest.raises(NonFiniteAsset, match=r"sample 4: non-finite \['opacity'\]"):
    write_sample_assets(tmp_path, 4, {**g, "opacity": np.full_like(g["opacity"], np.inf)}, resolution=size)
  assert not list(tmp_path.glob("sample_4*"))
