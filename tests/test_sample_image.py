"""launch/sample.py --image: image-to-3D with converted TRELLIS and DINOv2 weights (tiny ones)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
from PIL import Image

from conversion import trellis
from conftest import random_zero_inits
from fixture_scan import TRELLIS_DIR

ROOT = Path(__file__).resolve().parents[1]
DINOV2 = Path(os.environ.get("MDT_DINOV2_FIXTURES", ROOT / "tests" / "fixtures" / "dinov2"))


def _tiny_checkpoints(directory: Path, cond_channels: int):
  """The tiny fixture chain with flows re-built for ``cond_channels`` (the DINOv2 width), random weights."""
  for name in ("ss_flow", "slat_flow"):
    config = trellis.read_config(TRELLIS_DIR / name)
    config["args"]["cond_channels"] = cond_channels
    model = trellis.build_model(config)
    params = random_zero_inits(jax.jit(lambda key, m=model: trellis.init_params(m, key))(jax.random.PRNGKey(0)))
    trellis.save_checkpoint(directory / name, model, params)
  for suffix in (".json", ".safetensors"):
    shutil.copy(TRELLIS_DIR / f"ss_dec{suffix}", directory / f"ss_dec{suffix}")


def _rgba_object(path: Path):
  """A 96 x 80 RGBA image: a coloured disc on a transparent background."""
  y, x = np.mgrid[:96, :80]
  alpha = (((y - 50) ** 2 + (x - 38) ** 2) < 25 ** 2) * 255
  rgba = np.stack([x * 3 % 256, y * 2 % 256, np.full_like(x, 128), alpha], -1).astype(np.uint8)
  Image.fromarray(rgba, "RGBA").save(path)


def test_image_to_3d_runs_end_to_end(tmp_path):
  width = json.loads((DINOV2 / "config.json").read_text())["constructor_args"]["embed_dim"]
  _tiny_checkpoints(tmp_path, width)
  _rgba_object(tmp_path / "object.png")
  out = tmp_path / "out"
  cmd = [sys.executable, "launch/sample.py", "--config=configs/sample.py:tiny", f"--config.checkpoint_dir={tmp_path}",
         "--config.num_samples=1", "--config.batch_size=1", "--config.ss.steps=2", "--config.slat.steps=2",
         "--config.num_views=0", f"--image={tmp_path / 'object.png'}", f"--dinov2={DINOV2 / 'model.safetensors'}",
         f"--dinov2_config={DINOV2 / 'config.json'}", f"--out={out}"]
  result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  sample = np.load(out / "sample_000.npz")
  assert sample["coords"].shape[1] == 3 and sample["feats"].shape == (len(sample["coords"]), 8)
  assert np.all(np.isfinite(sample["feats"]))
