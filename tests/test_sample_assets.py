"""The sampler's 3D assets (issue 27 item 4): launch/sample.py with the tiny decoders, run from a TRELLIS
pipeline folder, writes per shape a PLY of Gaussians, a GLB mesh, a turntable mp4 and PNG views that read
back; decoders that do not fit the SLat flow, existing assets and non-finite Gaussians are refused."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from configs import sample as sample_configs
from conversion import trellis
from mdt_jax.generation.pipeline_folder import read_pipeline_folder
from mdt_jax.generation.sample_assets import AssetDecoders, render_settings
from mdt_jax.generation.sample_run import SkippedSamples, load_cond, sample_to_directory

ROOT = Path(__file__).resolve().parents[1]
TINY = sample_configs.get_config("tiny")
SIZE, FRAMES = 64, 4
PLY_FIELDS = (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)] + ["opacity"]
              + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])


def _stem(name: str) -> Path:
  return Path(TINY.checkpoint_dir) / TINY[name]


def _pipeline_folder(directory: Path, **changes) -> Path:
  """A TRELLIS pipeline folder of the tiny checkpoints: pipeline.json + ckpts/NAME.{json,safetensors}."""
  (directory / "ckpts").mkdir(parents=True)
  models = {}
  for key, field in (("sparse_structure_flow_model", "ss_flow"), ("sparse_structure_decoder", "ss_decoder"),
                     ("slat_flow_model", "slat_flow"), ("slat_decoder_gs", "gaussian_decoder"),
                     ("slat_decoder_mesh", "mesh_decoder")):
    for suffix in (".json", ".safetensors"):
      shutil.copy(f"{_stem(field)}{suffix}", directory / "ckpts" / f"{Path(TINY[field]).name}{suffix}")
    models[key] = f"ckpts/{Path(TINY[field]).name}"
  sampler = lambda steps, cfg: {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                                "params": {"steps": steps, "cfg_strength": cfg, "cfg_interval": [0.5, 1.0],
                                           "rescale_t": 3.0}}
  args = {"models": models, "sparse_structure_sampler": sampler(1, 7.5), "slat_sampler": sampler(1, 3.0),
          "slat_normalization": {"mean": [0.0] * 8, "std": [1.0] * 8}, "image_cond_model": "dinov2_vitl14_reg"}
  args.update(changes)
  (directory / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline", "args": args}))
  return directory


def _sample(out: Path, *args):
  return subprocess.run([sys.executable, "launch/sample.py", f"--out={out}", "--config.num_samples=1",
                         f"--config.assets.resolution={SIZE}", f"--config.assets.turntable_frames={FRAMES}", *args],
                        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
                        timeout=600)


def test_sample_cli_writes_assets_from_a_pipeline_folder_and_refuses_to_overwrite(tmp_path):
  pipeline = _pipeline_folder(tmp_path / "TRELLIS-image-large")
  out = tmp_path / "out"
  r = _sample(out, f"--pipeline={pipeline}", "--config.ss.cfg_strength=0")
  assert r.returncode == 0, r.stderr[-3000:]
  # pipeline.json's sampler settings, except the field given on the command line.
  assert "stage 1: StageSampling(steps=1, cfg_strength=0.0, cfg_interval=(0.5, 1.0)" in r.stdout
  assert "stage 2: StageSampling(steps=1, cfg_strength=3.0, cfg_interval=(0.5, 1.0)" in r.stdout
  assert f"from {pipeline}" in r.stdout and "mesh from ckpts/mesh_dec_16" in r.stdout
  assert sorted(p.name for p in out.iterdir()) == ["sample_0.png", "sample_000.npz", "sample_000.ply",
                                                   "sample_0_gaussians.ply", "sample_0_mesh.glb",
                                                   "sample_0_turntable.mp4"]
  import imageio.v2 as imageio
  import plyfile
  import trimesh
  from PIL import Image
  n_voxels = len(np.load(out / "sample_000.npz")["coords"])
  vertex = plyfile.PlyData.read(str(out / "sample_0_gaussians.ply"))["vertex"]
  assert [p.name for p in vertex.properties] == PLY_FIELDS
  assert vertex.count == 4 * n_voxels                       # gs_dec_16: 4 Gaussians per voxel
  assert np.all(np.isfinite(vertex["opacity"])) and np.ptp(vertex["x"]) > 0.1
  mesh = trimesh.load(str(out / "sample_0_mesh.glb"), force="mesh")
  assert len(mesh.faces) > 100 and mesh.visual.vertex_colors.shape == (len(mesh.vertices), 4)
  assert np.all(np.abs(mesh.vertices) <= 0.5 + 0.5 / 64 + 1e-6)    # deformed by at most half a 64^3 cell
  with imageio.get_reader(str(out / "sample_0_turntable.mp4")) as video:
    assert np.stack(list(video.iter_data())).shape == (FRAMES, SIZE, SIZE, 3)
  views = np.asarray(Image.open(out / "sample_0.png"))
  assert views.shape == (SIZE, 4 * SIZE, 3) and views.max() > 0

  again = _sample(out, f"--pipeline={pipeline}")
  assert again.returncode == 1
  assert f"already holds assets ['{out}/sample_0_gaussians.ply'" in again.stderr
  assert "--overwrite" in again.stderr and "[batch" not in again.stdout and "Traceback" not in again.stderr


def test_pipeline_folder_names_missing_keys_and_checkpoints(tmp_path):
  values = read_pipeline_folder(_pipeline_folder(tmp_path / "ok"))
  assert values["ss"] == {"steps": 1, "cfg_strength": 7.5, "cfg_interval": (0.5, 1.0), "rescale_t": 3.0}
  assert values["gaussian_decoder"] == "ckpts/gs_dec_16" and values["checkpoint_dir"] == str(tmp_path / "ok")
  assert values["slat_std"] == (1.0,) * 8
  bad = _pipeline_folder(tmp_path / "bad", slat_sampler={"params": {"steps": 2}})
  del_norm = json.loads((bad / "pipeline.json").read_text())
  del del_norm["args"]["slat_normalization"]["std"]
  (bad / "pipeline.json").write_text(json.dumps(del_norm))
  with pytest.raises(ValueError, match=r"pipeline\.json: missing args\.slat_sampler\.params\.cfg_strength, "
                                       r"args\.slat_sampler\.params\.cfg_interval, args\.slat_sampler\.params\."
                                       r"rescale_t, args\.slat_normalization\.std$"):
    read_pipeline_folder(bad)
  (tmp_path / "ok/ckpts/slat_flow.json").unlink()
  with pytest.raises(FileNotFoundError, match=r"names checkpoints that are not in .*ok: ckpts/slat_flow\.json$"):
    read_pipeline_folder(tmp_path / "ok")
  with pytest.raises(FileNotFoundError, match="no pipeline.json in"):
    read_pipeline_folder(tmp_path)


def test_decoders_that_do_not_fit_the_slat_flow_are_named():
  slat_flow, _ = trellis.load_model(_stem("slat_flow"))
  gaussian, mesh = trellis.load_model(_stem("gaussian_decoder")), trellis.load_model(_stem("mesh_decoder"))
  assert AssetDecoders(gaussian, mesh, slat_flow=slat_flow).with_mesh
  with pytest.raises(ValueError, match=r"^decoders do not fit the SLat flow: gaussian_decoder latent_channels 16 != "
                                       r"SLat flow out_channels 8; mesh_decoder resolution 32 != SLat flow "
                                       r"resolution 16$"):
    AssetDecoders((gaussian[0].clone(latent_channels=16), None), (mesh[0].clone(resolution=32), None),
                  slat_flow=slat_flow)
  with pytest.raises(ValueError, match=r"gaussian_decoder is a SLatMeshDecoder, not a SLatGaussianDecoder"):
    AssetDecoders(mesh, slat_flow=slat_flow)
  config = sample_configs.get_config("tiny")
  config.gaussian_decoder = ""
  with pytest.raises(ValueError, match="config.mesh_decoder needs config.gaussian_decoder"):
    AssetDecoders.from_config(config, slat_flow)
  config.mesh_decoder = ""
  assert AssetDecoders.from_config(config, slat_flow) is None
  config.assets.resolution = 96
  assert render_settings(config.assets, "cpu") == (96, 30) and render_settings(config.assets, "gpu") == (96, 120)


def test_non_finite_gaussians_are_named_and_skipped(tmp_path):
  model, params = trellis.load_model(_stem("gaussian_decoder"))
  params["out_layer"]["bias"] = np.full_like(params["out_layer"]["bias"], np.nan)
  trellis.save_checkpoint(tmp_path / "gs_nan", trellis.read_config(_stem("gaussian_decoder")), params)
  config = sample_configs.get_config("tiny")
  config.update(num_samples=1, batch_size=1, gaussian_decoder=str(tmp_path / "gs_nan"), mesh_decoder="")
  config.assets.update(resolution=SIZE, turntable_frames=FRAMES)
  lines = []
  with pytest.raises(SkippedSamples, match=r"samples \[0\] have non-finite Gaussians"):
    sample_to_directory(config, load_cond(str(_stem("ss_flow")) + ".io.npz:cond"), tmp_path / "out", np.float32,
                        log=lines.append)
  assert any(line.startswith("sample 0: non-finite [") for line in lines)
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["sample_000.npz", "sample_000.ply"]
