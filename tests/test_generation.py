"""Two-stage generation on the tiny fixture checkpoints: the stages chain, batching does not change
a shape, the models are checked against each other, and launch/sample.py writes its files."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mdt_jax.generation import StageSampling, TwoStagePipeline

ROOT = Path(__file__).resolve().parents[1]
# The tiny variant's settings (configs/sample.py), so the CLI test reuses these compilations.
SS = StageSampling(steps=2, cfg_strength=3.0, cfg_interval=(0.5, 1.0), rescale_t=3.0)
SLAT = StageSampling(steps=1, rescale_t=3.0)
MEAN, STD = np.linspace(-1, 1, 8), np.linspace(0.5, 2, 8)


@pytest.fixture(scope="module")
def pipe(trellis_dir):
  return TwoStagePipeline.from_checkpoints(trellis_dir / "ss_flow", trellis_dir / "ss_dec", trellis_dir / "slat_flow",
                                           slat_mean=MEAN, slat_std=STD)


@pytest.fixture(scope="module")
def generated(pipe, trellis_dir):
  cond = np.load(trellis_dir / "ss_flow.io.npz")["cond"]
  return cond, pipe(cond, jax.random.key(0), ss=SS, slat=SLAT)


def test_stages_chain(pipe, generated):
  cond, out = generated
  assert out.ss_latent.shape == (2, 8, 8, 8, 8) and out.occupancy.shape == (2, 16, 16, 16)
  logits = jax.jit(lambda p, z: pipe.ss_decoder.apply({"params": p}, z))(pipe.params["ss_decoder"], out.ss_latent)
  np.testing.assert_array_equal(out.occupancy, np.asarray(logits)[..., 0] > 0)
  np.testing.assert_array_equal(out.coords, np.argwhere(out.occupancy))
  assert 0 < len(out.coords) and set(np.unique(out.coords[:, 0])) == {0, 1}
  normalised = pipe.latents(out.coords, cond, jax.random.key(0), SLAT, unnormalise=False)
  assert np.all(np.isfinite(normalised)) and normalised.shape == out.feats.shape == (len(out.coords), 8)
  np.testing.assert_allclose(out.feats, normalised * STD + MEAN, rtol=1e-6, atol=1e-6)
  assert set(out.timings) == {"ss_flow", "ss_decoder", "slat_noise", "slat_flow"}
  coords, feats = out.sample(1)
  np.testing.assert_array_equal(coords, out.coords[out.coords[:, 0] == 1, 1:])


def test_a_shape_does_not_depend_on_its_batch(pipe, generated):
  """Sample 1's noise, drawn alone under its id, is the noise it had in the batch (the samplers treat
  samples independently: tests/test_flow_samplers.py)."""
  _, out = generated
  key = jax.random.key(0)
  np.testing.assert_array_equal(pipe.structure_noise(key, [1])[0], pipe.structure_noise(key, [0, 1])[1])
  rows = out.coords[:, 0] == 1
  alone = pipe.latent_noise(key, out.coords[rows] * [0, 1, 1, 1], [1])
  np.testing.assert_array_equal(alone, np.asarray(pipe.latent_noise(key, out.coords, [0, 1]))[rows])


def test_models_that_do_not_fit_are_named(pipe):
  with pytest.raises(ValueError, match=r"slat mean/std must be \[8\]"):
    TwoStagePipeline(pipe.ss_flow, None, pipe.ss_decoder, None, pipe.slat_flow, None, slat_mean=[0.0], slat_std=[1.0])
  with pytest.raises(ValueError, match="decoder output resolution 16 != SLat flow resolution 32"):
    TwoStagePipeline(pipe.ss_flow, None, pipe.ss_decoder, None, pipe.slat_flow.clone(resolution=32), None,
                     slat_mean=MEAN, slat_std=STD)
  with pytest.raises(ValueError, match=r"cond must be \[B, L, 32\]"):
    pipe.structure(np.zeros((2, 7, 16)), jax.random.key(0), SS)


def test_sample_cli_writes_latents_point_cloud_and_views(generated, tmp_path):
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  r = subprocess.run([sys.executable, "launch/sample.py", f"--out={tmp_path}", "--config.num_samples=1",
                      "--config.num_views=2", "--config.compute_dtype=bfloat16", "--dtype=float32",
                      "--config.gaussian_decoder=", "--config.mesh_decoder="],   # no decoders: voxel views
                     cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "float32 compute" in r.stdout   # --dtype overrides the config
  assert "[batch 1/1]" in r.stdout and "time per stage" in r.stdout and "slat_flow" in r.stdout
  z = np.load(tmp_path / "sample_000.npz")
  _, out = generated
  coords, feats = out.sample(0)  # same seed, sample id and settings; identity normalisation there
  np.testing.assert_array_equal(z["coords"], coords)
  np.testing.assert_allclose(z["feats"] * STD + MEAN, feats, rtol=1e-5, atol=1e-5)
  assert int(z["resolution"]) == 16
  ply = (tmp_path / "sample_000.ply").read_text().splitlines()
  assert ply[:3] == ["ply", "format ascii 1.0", f"element vertex {len(coords)}"]
  assert len(ply) == ply.index("end_header") + 1 + len(coords)
  vertices = np.array([row.split()[:3] for row in ply[ply.index("end_header") + 1:]], float)
  np.testing.assert_allclose(vertices, (coords + 0.5) / 16 - 0.5, atol=1e-6)
  assert (tmp_path / "sample_000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sample_cli_names_a_bad_compute_dtype(tmp_path):
  r = subprocess.run([sys.executable, "launch/sample.py", f"--out={tmp_path}", "--config.compute_dtype=int8"],
                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
  assert r.returncode != 0
  assert "config.compute_dtype must be one of ['float32', 'bfloat16', 'float16'], got 'int8'" in r.stderr
  assert "Traceback" not in r.stderr and not any(tmp_path.iterdir())
