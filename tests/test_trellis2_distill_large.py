"""TRELLIS.2's full-size distillation variants: they resolve (the dry run), build at the released
sizes under ``jax.eval_shape``, and their sharded memory estimate runs on forced CPU devices."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from configs import distill as distill_configs
from fixture_scan import TRELLIS2_DIR
from mdt_jax.models import registry

ROOT = Path(__file__).resolve().parents[1]
LISTING = json.loads((TRELLIS2_DIR / "trellis2_param_shapes.json").read_text())["models"]
# variant -> (the released checkpoint it distils, teacher guidance g)
RELEASED = {"trellis2_ss_L": ("ss_flow_img_dit_1_3B_64_bf16", 7.5),
            "trellis2_shape_L": ("slat_flow_img2shape_dit_1_3B_512_bf16", 7.5),
            "trellis2_tex_L": ("slat_flow_imgshape2tex_dit_1_3B_512_bf16", 1.0)}


@pytest.mark.parametrize("variant", sorted(RELEASED))
def test_trellis2_large_variant_is_the_released_model_with_its_guidance(variant):
  config = distill_configs.get_config(variant)
  name, guidance = RELEASED[variant]
  assert config.teacher_checkpoint == f"ckpts/{name}"
  assert config.guidance_convention == "trellis2" and config.cfg_teacher_vm == config.cfg_teacher_vd == guidance
  assert (config.objective, config.distill_type, config.compute_dtype) == ("vm_vd", "discrete", "bfloat16")
  released = LISTING[name]
  assert {k: v for k, v in config.model.args.items() if k != "use_checkpoint"} == released["args"]
  model = registry.build_model(config.model.to_dict())
  params = jax.eval_shape(lambda: registry.init_params(model, jax.random.key(0)))
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == released["num_parameters"]


def test_trellis2_large_dry_run_prints_the_config():
  r = subprocess.run([sys.executable, "launch/train.py", "--config=configs/distill.py:trellis2_tex_L", "--dry_run"],
                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "teacher_checkpoint: ckpts/slat_flow_imgshape2tex_dit_1_3B_512_bf16" in r.stdout
  assert "guidance_convention: trellis2" in r.stdout and "cond_tokens: 1029" in r.stdout


def test_trellis2_texture_memory_estimate_on_8_devices():
  """The sparse stage with concat_cond, on the fsdp mesh of 8 forced devices: the float32 params of
  student and teacher gathered whole, state (params, EMA, AdamW's two moments) sharded over 8."""
  r = subprocess.run([sys.executable, "launch/train_memory.py", "--devices=8", "--variants=trellis2_tex_L",
                      "--meshes=fsdp", "--noxla_plan", "--slat_voxels=1024"],
                     cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  line = next(l for l in r.stdout.splitlines() if l.startswith("train_memory[trellis2_tex_L"))
  assert "'fsdp': 8" in line
  gib = lambda name: float(re.search(rf"{name} ([0-9.]+)", line).group(1))
  n = LISTING["slat_flow_imgshape2tex_dit_1_3B_512_bf16"]["num_parameters"]
  assert gib("gathered params") == pytest.approx(2 * 4 * n / 2 ** 30, abs=0.01)
  assert gib(r"\(state") == pytest.approx(4 * 4 * n / 8 / 2 ** 30, abs=0.02)
  assert 0 < gib("residuals") and 0 < gib("block backward") and gib("estimate per device") > gib("gathered params")
