"""launch/demo.py --quick end to end on tiny stand-in teachers this test makes (random weights, so
the numbers mean nothing): every part runs, the report and its files are written, and a rerun in
the same workdir reuses every stored part."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from conftest import random_zero_inits
from conversion import trellis
from mdt_jax.demo import plan as demo_plan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from configs import models  # noqa: E402

TINY = {"ss": (models.SS_TOY, dict(model_channels=32, num_blocks=1, num_heads=2)),
        "slat": (models.SLAT_TOY, dict(model_channels=32, num_blocks=1, num_heads=2, io_block_channels=(16,)))}


def _demo(workdir, teachers):
  return subprocess.run([sys.executable, str(ROOT / "launch/demo.py"), f"--workdir={workdir}", "--quick",
                         f"--teacher_ss={teachers['ss']}", f"--teacher_slat={teachers['slat']}"],
                        capture_output=True, text=True, cwd=ROOT, env=os.environ.copy(), timeout=900)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
  """(workdir, stdout of the first run, stdout of the rerun)."""
  root = tmp_path_factory.mktemp("demo")
  teachers = {}
  for stage, (config, overrides) in TINY.items():
    model = trellis.build_model({"name": config["name"], "args": {**config["args"], **overrides}})
    teachers[stage] = root / f"teacher_{stage}"
    trellis.save_checkpoint(teachers[stage], model, random_zero_inits(trellis.init_params(model, jax.random.key(0))))
  first = _demo(root / "run", teachers)
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  again = _demo(root / "run", teachers)
  assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
  return root / "run", first.stdout, again.stdout


def test_report_has_every_method_and_section(demo):
  workdir, stdout, _ = demo
  report = (workdir / "report.md").read_text()
  plan = demo_plan.quick_plan()
  for heading in ("## Method", "## Distillation runs", "## stage 1", "## stage 2", "## The two-stage pipeline",
                  "## Speed", "## MDT-dist against CM and naive Euler"):
    assert heading in report
  for method in plan.methods():
    assert report.count(f"| {method.label} |") >= 3, method.label  # stage 1, stage 2 and pipeline rows
  assert "real: second real set" in report and "limit (NFE ratio)" in report and "50x" in report
  assert "n/a" not in report
  assert "ETA" in stdout and f"[{len(plan.methods()) * 3 + 11}/" in stdout


def test_figures_samples_and_results(demo):
  workdir, _, _ = demo
  for png in ("quality_vs_steps.png", "training_curves.png", "renders_stage1.png", "renders_stage2.png",
              "renders_pipeline.png"):
    assert (workdir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
  plan = demo_plan.quick_plan()
  n = plan.per_condition * len(plan.conditions)
  for method in plan.methods():
    stage1 = np.load(workdir / "samples" / f"stage1_{method.name}.npz")
    assert stage1["latents"].shape == (n, 8, 8, 8, 8) and stage1["occupancy"].shape == (n, 16, 16, 16)
    np.testing.assert_array_equal(stage1["cond_id"], np.repeat(plan.conditions, plan.per_condition))
    for part in ("stage2", "pipeline"):
      sample = np.load(workdir / "samples" / f"{part}_{method.name}.npz")
      assert sample["coords"].shape[1] == 4 and sample["feats"].shape == (len(sample["coords"]), 8)
    result = json.loads((workdir / "results" / "stage1" / f"{method.name}.json").read_text())
    assert 0.0 <= result["metrics"]["1nna"] <= 1.0 and result["count"] == n
  latency = json.loads((workdir / "results" / "latency" / "all.json").read_text())["seconds"]
  assert all(v > 0 for m in latency.values() for k, v in m.items() if k != "pipeline_voxels")
  for stage in demo_plan.STAGES:
    for student in demo_plan.STUDENTS:
      run = workdir / "runs" / f"{stage}_{student}"
      assert json.loads((run / "done.json").read_text())["step"] == plan.distill_steps[stage]
      assert (run / "export" / "student_ema0.9.safetensors").exists()


def test_rerun_reuses_every_stored_part(demo):
  _, _, again = demo
  ran = [line for line in again.splitlines() if line.startswith("    ") and "skipped" not in line]
  assert [line.split(":")[0].strip() for line in ran] == ["figures and report"], ran
