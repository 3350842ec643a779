"""The toy study (mdt_jax/demo/study.py): the du/dt scalings, every arm's config, and one arm run end
to end on a tiny stand-in teacher (random weights: the numbers mean nothing): trained, every kept
checkpoint scored, stored, resumed without retraining or rescoring, and reported."""
import dataclasses
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_zero_inits
from conversion import trellis
from mdt_jax.demo import run as demo_run, study, study_report
from mdt_jax.generation.toy_sampling import ToySamplers
from mdt_jax.distill.targets import normalise_per_sample
from mdt_jax.sparse import SparseTensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from configs import distill, models  # noqa: E402

TINY = {"ss": (models.SS_TOY, dict(model_channels=32, num_blocks=1, num_heads=2)),
        "slat": (models.SLAT_TOY, dict(model_channels=32, num_blocks=1, num_heads=2, io_block_channels=(16,)))}


def test_d_norm_over_sample_and_element_dense():
  x = np.random.default_rng(0).standard_normal((2, 4, 4, 4, 8)).astype(np.float32)
  x[1] *= 10.0
  for over, norm in (("sample", np.sqrt((x ** 2).sum((1, 2, 3, 4)))),
                     ("element", np.sqrt((x ** 2).mean((1, 2, 3, 4))))):
    out = np.asarray(normalise_per_sample(jnp.asarray(x), 0.1, over))
    np.testing.assert_allclose(out, x / (norm[:, None, None, None, None] + 0.1), rtol=1e-5)
  # the element form keeps entries O(1): RMS ~1 whatever the size; the sample form ~1/sqrt(numel).
  rms = np.sqrt((np.asarray(normalise_per_sample(jnp.asarray(x), 0.1, "element")) ** 2).mean((1, 2, 3, 4)))
  assert np.all(rms > 0.9) and np.all(rms < 1.0)


def test_d_norm_element_counts_valid_rows_only():
  coords = np.array([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], np.int32)
  feats = np.array([[3.0, 4.0], [0.0, 0.0], [1.0, 1.0]], np.float32)
  x = SparseTensor.from_packed(coords, feats, capacity=8, batch_size=2)
  out = normalise_per_sample(x, 0.0, "element")
  valid = np.asarray(out.feats)[:3]
  # sample 0: 4 valid elements, sum of squares 25 -> rms 2.5; sample 1: 2 elements, rms 1.
  np.testing.assert_allclose(valid, feats / np.array([[2.5], [2.5], [1.0]]), rtol=1e-6)
  with pytest.raises(ValueError, match="d_norm_over"):
    normalise_per_sample(x, 0.1, "tensor")


def _teacher(root: Path, stage: str) -> Path:
  config, overrides = TINY[stage]
  model = trellis.build_model({"name": config["name"], "args": {**config["args"], **overrides}})
  stem = root / f"teacher_{stage}"
  trellis.save_checkpoint(stem, model, random_zero_inits(trellis.init_params(model, jax.random.key(0))))
  return stem


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  """(workdir, plan, {stage: teacher stem}, ToySamplers) with tiny stand-in teachers."""
  root = tmp_path_factory.mktemp("study")
  teachers = {stage: _teacher(root, stage) for stage in TINY}
  loaded = {stage: trellis.load_checkpoint(stem) for stage, stem in teachers.items()}
  plan = dataclasses.replace(study.quick_plan(), arm_names=("vm_vd_dnorm_rms",))
  return root / "run", plan, teachers, loaded, ToySamplers(loaded["ss"][0], loaded["slat"][0], seed=0)


def _study(tiny, stage):
  workdir, plan, teachers, loaded, samplers = tiny
  return study.Study(workdir, plan, stage, base_config=distill.get_config(f"{stage}_toy"), teacher=str(teachers[stage]),
                     teacher_digest=demo_run.checkpoint_digest(teachers[stage]), samplers=samplers,
                     models={"teacher": loaded[stage][1]}, out=lambda *_: None)


@pytest.mark.parametrize("stage", ["ss", "slat"])
def test_every_arm_config(tiny, stage):
  s = _study(tiny, stage)
  names = [a.name for a in study.arms(stage)]
  assert len(set(names)) == len(names) and {"vm_vd", "vm_vd_dnorm", "vm_vd_dnorm_rms", "vm", "cm"} <= set(names)
  assert ({"vm_vd_cfg0.5", "vm_vd_published"} <= {a.name for a in study.arms(stage) if a.core}) == (stage == "ss")
  for arm in study.arms(stage):
    config = s.config(arm, seed=3)
    assert config.objective == arm.objective and config.seed == 3 and config.stage == stage
    assert tuple(config.ema_rates) == study.EMA_RATES
    for key, value in arm.overrides.items():
      assert config[key] == value, (arm.name, key)
    steps, every = s.plan.steps[stage], s.plan.eval_every[stage]
    assert config.total_steps == arm.overrides.get("total_steps", steps) and config.checkpoint_every == every
    assert config.keep_checkpoints >= config.total_steps // every  # every scored checkpoint is kept
    assert config.data.toy_num_train == 48 and config.teacher_checkpoint == str(tiny[2][stage])


def test_one_arm_runs_scores_resumes_and_reports(tiny):
  s = _study(tiny, "ss")
  done = s.run_all()
  result = done["arms"]["vm_vd_dnorm_rms"][0]
  assert sorted(result["scores"]) == sorted(f"{step}/{which}/{steps}" for step in (1, 2) for steps in (1, 2)
                                            for which in ("raw", "ema0", "ema1"))
  assert all(0.0 <= v["1nna"] <= 1.0 for v in result["scores"].values())
  assert result["record"]["steps"] == 2 and "loss_vm" in result["losses"]
  samples = np.load(s.results_path("vm_vd_dnorm_rms", 0).parent / "seed0_steps1.npz")["samples"]
  assert samples.shape == (len(s.sets.cond_ids), 16, 16, 16) and samples.dtype == bool
  reference = done["reference"]
  assert set(reference["teacher"]) == {"steps25", "steps1", "steps2", "steps4"} and "second_real" in reference
  assert len(reference["teacher"]["steps1"]) == 2  # two sampling seeds
  # naive Euler is the student at step 0: its 1-step score is the teacher's with the same noise.
  stored = s.results_path("vm_vd_dnorm_rms", 0).read_text()
  record = json.loads((s.run_dir("vm_vd_dnorm_rms", 0) / "demo_run.json").read_text())
  again = s.run_all()
  assert s.results_path("vm_vd_dnorm_rms", 0).read_text() == stored  # nothing rescored
  assert json.loads((s.run_dir("vm_vd_dnorm_rms", 0) / "demo_run.json").read_text()) == record  # not retrained
  assert again["arms"]["vm_vd_dnorm_rms"][0]["scores"] == result["scores"]

  lock = s.run_dir("vm_vd_dnorm_rms", 0) / "study.lock"
  lock.write_text("1")  # pid 1 is alive: another process holds the run
  with pytest.raises(RuntimeError, match="another study process"):
    s.run_all()
  lock.write_text("999999999")  # a dead process's lock is taken over
  s.run_all()
  assert not lock.exists()

  report = study_report.write(tiny[0], s.plan, command="test").read_text()
  assert "| `vm_vd_dnorm_rms` |" in report and "| teacher, 25 Euler steps | 25 | 2 |" in report
  assert "| `cm` | the consistency" in report and "not run" in report  # the arms not run are listed as such
  for png in ("study_curves_ss.png", "study_renders_ss.png"):
    assert (tiny[0] / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
