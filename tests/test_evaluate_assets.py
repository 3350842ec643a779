"""The asset evaluation (issue 27 item 5): FD and KD against float64 references, the tiny evaluation end to
end and resumed, condition views in TRELLIS's layout, and the named errors of a bad reference or decoder."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import linalg

from configs.evaluate_assets import get_config
from conversion import dinov2 as dinov2_conversion
from mdt_jax.eval import asset_evaluation, asset_protocol
from mdt_jax.eval.feature_distances import frechet_distance, kernel_distance

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _fd_reference(a, b):
  """FID's formula with scipy's sqrtm of the covariance product (real part), float64."""
  cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
  mu = a.mean(0) - b.mean(0)
  return mu @ mu + np.trace(cov_a + cov_b - 2 * np.real(linalg.sqrtm(cov_a @ cov_b)))


def _kd_reference(a, b):
  """KID's unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3, pair by pair."""
  d = a.shape[1]
  k = lambda x, y: (x @ y / d + 1) ** 3
  n, m = len(a), len(b)
  within_a = sum(k(a[i], a[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
  within_b = sum(k(b[i], b[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
  across = sum(k(x, y) for x in a for y in b) / (n * m)
  return within_a + within_b - 2 * across


def test_feature_distances_match_float64_references():
  """FD within 1e-9 (relative) of scipy's sqrtm formula, KD within 1e-12 of the pairwise sum, on correlated
  features of different set sizes; with fewer samples than dimensions FD of a set with itself is 0 and of
a shifted copy the squared shift, to round-off."""
  rng = np.random.default_rng(0)
  mix = rng.normal(size=(12, 12))
  a = rng.normal(size=(60, 12)) @ mix
  b = rng.normal(size=(45, 12)) @ (mix + 0.3 * rng.normal(size=(12, 12))) + 0.5
  fd = frechet_distance(a, b)
  assert fd > 1 and abs(fd - _fd_reference(a, b)) <= 1e-9 * fd
  assert abs(kernel_distance(a, b) - _kd_reference(a, b)) <= 1e-12 * max(1.0, abs(_kd_reference(a, b)))
  few = rng.normal(size=(5, 12))
  scale = np.trace(np.cov(few, rowvar=False))       # round-off near the zero eigenvalues: ~sqrt(eps) of it
  assert abs(frechet_distance(few, few)) < 1e-6 * scale
  assert abs(frechet_distance(few, few + 1.0) - 12.0) < 1e-6 * scale          # a shift: |mu|^2 only
  with pytest.raises(ValueError, match="differ in dimension: 12 and 11"):
    frechet_distance(a, b[:, :11])


def test_dinov2_vitl14_preset_is_the_registered_one_without_registers():
  """``dinov2_vitl14``'s parameters are ``dinov2_vitl14_reg``'s (the released shapes) less the register tokens."""
  shapes = json.loads((FIXTURES / "dinov2/dinov2_vitl14_reg_param_shapes.json").read_text())
  released = {p["name"]: tuple(p["shape"]) for p in shapes["params"] if p["name"] != "register_tokens"}
  ours = dinov2_conversion.state_dict_shapes(dinov2_conversion.model_from_config("dinov2_vitl14"))
  assert ours == released
  assert sum(np.prod(s) for s in ours.values()) == shapes["total_params"] - 4 * 1024


def _small_config(**reference):
  """The tiny variant cut down: two rows, two conditions x 1 sample, 32 px renders, 28 px features."""
  config = get_config("tiny")
  config.samples_per_condition = 1
  del config.rows["student_2x1"]
  config.rows.teacher_4x2.ss.steps = 2
  config.protocol.resolution = 32
  config.features.image_size = 28
  config.reference.row = reference.get("row", "")
  config.reference.dir = reference.get("dir", "")
  return config


def test_evaluate_assets_tiny_writes_metrics_renders_and_resumes(tmp_path):
  """Two rows -> metrics.json (finite FD/KD for the row against the reference row), report.md, 4 PNGs per
  asset; a second run generates nothing (every asset cached, records untouched) and gives the same numbers;
  the renders then serve as a reference directory."""
  config = _small_config(row="teacher_4x2")
  lines = []
  metrics = asset_evaluation.evaluate_assets(config, tmp_path, log=lines.append)
  assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
  assert [r["name"] for r in metrics["rows"]] == ["student_1x1", "teacher_4x2"]
  student, teacher = metrics["rows"]
  assert np.isfinite(student["fd_dinov2"]) and np.isfinite(student["kd_dinov2"]) and student["fd_dinov2"] > 0
  assert teacher["reference"] and teacher["fd_dinov2"] is None
  assert student["n_assets"] == 2 and student["n_images"] == 8 and student["seconds_per_asset"] > 0
  assert metrics["protocol"]["render"]["pitch_deg"] == 30.0 and metrics["protocol"]["features"]["token"] == \
      "x_norm_clstoken"
  assert "| student_1x1 |" in (tmp_path / "report.md").read_text()
  pngs = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "renders").rglob("*.png"))
  assert len(pngs) == 2 * 2 * 4 and "renders/student_1x1/ss_flow_cond_0_s0/yaw090.png" in pngs
  assert any("ETA" in line for line in lines)

  records = {p: p.stat().st_mtime_ns for p in (tmp_path / "renders").rglob("record.json")}
  again = []
  assert asset_evaluation.evaluate_assets(config, tmp_path, log=again.append) == metrics
  assert sum("(cached)" in line for line in again) == 4
  assert {p: p.stat().st_mtime_ns for p in records} == records

  as_reference = _small_config(dir=str(tmp_path / "renders/teacher_4x2"))
  rows = asset_evaluation.evaluate_assets(as_reference, tmp_path, log=lambda _: None)["rows"]
  assert rows[1]["fd_dinov2"] == pytest.approx(0.0, abs=1e-6)          # the teacher row against its own renders
  assert rows[0]["fd_dinov2"] == pytest.approx(student["fd_dinov2"], rel=1e-6)


def test_evaluate_assets_refuses_a_reference_of_another_protocol_or_missing_views(tmp_path):
  """A reference directory with another pitch and an asset lacking a view: one error listing both, before
  anything is generated; a directory without protocol.json is named too."""
  reference = tmp_path / "reference"
  protocol = asset_protocol.RenderProtocol.from_mapping(_small_config(row="x").protocol)
  asset_protocol.write_protocol(reference, dataclasses.replace(protocol, pitch_deg=20.0))
  images = np.zeros((4, 32, 32, 3), np.uint8)
  asset_protocol.write_asset(reference, "a", images, protocol, {})
  asset_protocol.write_asset(reference, "b", images, protocol, {})
  (reference / "b/yaw270.png").unlink()
  with pytest.raises(asset_protocol.ProtocolMismatch,
                     match=r"pitch_deg: 20.0 \(run: 30.0\); b lacks \['yaw270'\]"):
    asset_evaluation.evaluate_assets(_small_config(dir=str(reference)), tmp_path / "out")
  assert not (tmp_path / "out").exists()
  (reference / "protocol.json").unlink()
  with pytest.raises(asset_protocol.ProtocolMismatch, match="no protocol.json"):
    asset_evaluation.evaluate_assets(_small_config(dir=str(reference)), tmp_path / "out")


def test_evaluate_assets_names_config_errors_before_sampling(tmp_path):
  """A decoder whose resolution is not the SLat flow's, an unknown reference row, two condition sources:
  each one named error, nothing written."""
  config = _small_config(row="teacher_4x2")
  config.decoder = str(FIXTURES / "trellis_decoders/gs_dec")
  with pytest.raises(ValueError, match="decoder does not fit row 'student_1x1': resolution 64 != SLat flow "
                                       "resolution 16"):
    asset_evaluation.evaluate_assets(config, tmp_path)
  with pytest.raises(ValueError, match="reference.row 'nope' is not a row"):
    asset_evaluation.evaluate_assets(_small_config(row="nope"), tmp_path)
  config = _small_config(row="teacher_4x2")
  config.conditions.trellis_root = str(tmp_path)
  with pytest.raises(ValueError, match="exactly one of conditions.tokens and conditions.trellis_root"):
    asset_evaluation.evaluate_assets(config, tmp_path)
  assert not list(tmp_path.iterdir())


def test_evaluate_assets_conditions_from_trellis_views(tmp_path):
  """Condition views in TRELLIS's dataset layout -> DINOv2 condition tokens, one [1 + R + N, C] per instance,
  different views giving different tokens."""
  from mdt_jax.data.trellis_testing import write_tiny_trellis_dataset
  good = write_tiny_trellis_dataset(tmp_path, num_good=2, broken=(), filtered=())["good"]
  kwargs = dict(encoder_checkpoint=str(FIXTURES / "dinov2/model.safetensors"),
                encoder_config=str(FIXTURES / "dinov2/config.json"), image_size=70)
  tokens = asset_evaluation.load_view_conditions(tmp_path, good, view=0, **kwargs)
  assert list(tokens) == good and all(t.shape == (1 + 4 + 25, 64) for t in tokens.values())
  other = asset_evaluation.load_view_conditions(tmp_path, good[:1], view=1, **kwargs)
  assert np.max(np.abs(other[good[0]] - tokens[good[0]])) > 1e-3
  with pytest.raises(ValueError, match="conditions.view 2: .* has 2 condition views"):
    asset_evaluation.load_view_conditions(tmp_path, good[:1], view=2, **kwargs)


def test_evaluate_assets_paper_variant_names_the_paths_to_fill_in(tmp_path):
  """``toys4k`` as shipped: one error naming every empty checkpoint path, nothing written."""
  with pytest.raises(ValueError, match=r"set rows.mdt_1x2.checkpoint_dir, rows.mdt_2x2.checkpoint_dir, "
                                       r"rows.teacher.checkpoint_dir, decoder, features.checkpoint"):
    asset_evaluation.evaluate_assets(get_config("toys4k"), tmp_path)
  assert not list(tmp_path.iterdir())
