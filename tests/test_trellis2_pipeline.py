"""TRELLIS.2's 512 pipeline end to end on the tiny checkpoints (launch/sample.py -> files), the texture
stage chained on the shape latent, the structure's pooling, and models that do not fit."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from configs import sample as sample_configs
from conversion.trellis import load_model
from fixture_scan import TRELLIS2_DIR, TRELLIS_DIR
from mdt_jax.generation.pipeline import StageSampling, pool_occupancy
from mdt_jax.generation.trellis2_pipeline import Trellis2Pipeline
from mdt_jax.sparse import SparseTensor

ROOT = Path(__file__).resolve().parents[1]
CONFIG = sample_configs.get_config("trellis2_tiny")


@pytest.fixture(scope="module")
def models():
  paths = {"ss_flow": TRELLIS2_DIR / "ss_flow", "ss_decoder": TRELLIS_DIR / "ss_dec",
           "shape_flow": TRELLIS2_DIR / "shape_flow", "tex_flow": TRELLIS2_DIR / "tex_flow"}
  return {name: load_model(path) for name, path in paths.items()}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """Three assets in batches of two (the last batch padded) through the CLI."""
  out = tmp_path_factory.mktemp("trellis2_512")
  r = subprocess.run([sys.executable, "launch/sample.py", "--config=configs/sample.py:trellis2_tiny", f"--out={out}",
                      f"--config.checkpoint_dir={TRELLIS2_DIR}", f"--config.ss_decoder={TRELLIS_DIR / 'ss_dec'}",
                      "--config.num_samples=3", "--config.num_views=1"],
                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  return out, r.stdout


def test_trellis2_512_pipeline_writes_both_latents_voxels_and_views(written, models):
  out, stdout = written
  assert "[batch 2/2]" in stdout and "tex_flow" in stdout and "wrote 3 asset(s)" in stdout
  assert "convention='trellis2'" in stdout and "guidance_rescale=0.7" in stdout
  decoder, decoder_params = models["ss_decoder"]
  for i in range(3):
    z = np.load(out / f"sample_{i:03d}.npz")
    n = len(z["coords"])
    assert int(z["resolution"]) == 8 and bool(z["normalised"])
    assert z["ss_latent"].shape == (8, 8, 8, 8) and z["shape_latent"].shape == z["tex_latent"].shape == (n, 8)
    assert np.all(np.isfinite(z["shape_latent"])) and np.all(np.isfinite(z["tex_latent"]))
    # The voxels: the decoder's logits > 0 at 16^3, max-pooled by 2 to 8^3, as the 512 type pools 64^3 to 32^3.
    logits = decoder.apply({"params": decoder_params}, z["ss_latent"][None])[..., 0]
    np.testing.assert_array_equal(z["coords"], np.argwhere(np.asarray(pool_occupancy(logits > 0, 2))[0]))
    ply = (out / f"sample_{i:03d}.ply").read_text().splitlines()
    assert ply[2] == f"element vertex {n}" and len(ply) == ply.index("end_header") + 1 + n
    assert (out / f"sample_{i:03d}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  a, b = (np.load(out / f"sample_{i:03d}.npz") for i in (0, 2))
  assert not np.allclose(a["ss_latent"], b["ss_latent"])   # each asset its own noise


def test_trellis2_texture_is_sampled_on_the_shape_latent(written, models):
  """Asset 1's texture, sampled alone under its id with its written shape latent as concat_cond, is
  the one the batched run wrote (noise per sample id; concat_cond = the normalised shape latent)."""
  out, _ = written
  pipe = Trellis2Pipeline(models, resolution=CONFIG.resolution)
  z = np.load(out / "sample_001.npz")
  coords = np.pad(z["coords"], ((0, 0), (1, 0)))   # sample 0 of a batch of one
  shape = SparseTensor.from_packed(coords, z["shape_latent"])
  cond = np.load(TRELLIS2_DIR / "ss_flow.io.npz")["cond"][1:2]   # asset 1 uses condition 1
  tex = pipe.tex_stage(pipe.params["tex_flow"], coords, cond, jax.random.key(CONFIG.seed),
                       StageSampling(**CONFIG.tex), sample_ids=[1], timings={}, concat_cond=shape)
  expected = z["tex_latent"]
  np.testing.assert_allclose(tex.to_packed()[1], expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_trellis2_structure_pooling_is_a_max_pool():
  grid = np.random.default_rng(0).random((2, 8, 8, 8)) > 0.97
  pooled = np.asarray(pool_occupancy(grid, 2))
  expected = np.zeros((2, 4, 4, 4), bool)
  for b, x, y, z in np.argwhere(grid):
    expected[b, x // 2, y // 2, z // 2] = True
  np.testing.assert_array_equal(pooled, expected)
  np.testing.assert_array_equal(np.asarray(pool_occupancy(grid, 1)), grid)


def test_trellis2_pipeline_names_what_does_not_fit(models):
  with pytest.raises(ValueError, match="structure resolution 6 must divide the SS decoder's output resolution 16"):
    Trellis2Pipeline(models, resolution=6)
  swapped = dict(models, shape_flow=models["tex_flow"], tex_flow=models["shape_flow"])
  with pytest.raises(ValueError, match=r"texture flow in_channels 8 != its out_channels 8 \+ the shape latent's 8"):
    Trellis2Pipeline(swapped, resolution=8)
  with pytest.raises(ValueError, match=r"shape mean/std must be \[8\]"):
    Trellis2Pipeline(models, resolution=8, shape_normalization=([0.0], [1.0]), tex_normalization=([0.0] * 8, [1.0] * 8))
  with pytest.raises(ValueError, match="statistics of both latents or of neither"):
    Trellis2Pipeline(models, resolution=8, shape_normalization=([0.0] * 8, [1.0] * 8))
  pipe = Trellis2Pipeline(models, resolution=8)
  with pytest.raises(ValueError, match=r"cond_slat\): cond must be \[B, L, 48\]"):
    pipe(np.zeros((1, 6, 48)), jax.random.key(0), ss=StageSampling(1), shape=StageSampling(1), tex=StageSampling(1),
         cond_slat=np.zeros((1, 6, 32)))
