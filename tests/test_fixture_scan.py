"""The fixture directory scan classifies by content and refuses files it does not understand."""
import shutil

import pytest

from fixture_scan import TRELLIS_DIR, scan


def test_scan_classifies_the_fixture_directory():
  cases = scan()
  assert cases, f"no cases found in {TRELLIS_DIR}"
  assert {c.kind for c in cases} <= {"model", "sampler", "mdt_loss", "mdt_v_pred_tgt"}
  assert all(c.model_name for c in cases if c.kind == "model")


def test_unknown_file_fails_the_scan(tmp_path):
  for name in ("ss_flow.json", "ss_flow.safetensors", "ss_flow.io.npz"):
    shutil.copy(TRELLIS_DIR / name, tmp_path / name)
  assert [c.name for c in scan(tmp_path)] == ["ss_flow"]
  (tmp_path / "mystery.io.npz").write_bytes(b"")
  with pytest.raises(ValueError, match="mystery.io.npz"):
    scan(tmp_path)


def test_checkpoint_without_io_is_auxiliary(tmp_path):
  for name in ("mdt_student.json", "mdt_student.safetensors"):
    shutil.copy(TRELLIS_DIR / name, tmp_path / name)
  assert scan(tmp_path) == []
  shutil.copy(TRELLIS_DIR / "ss_flow.safetensors", tmp_path / "orphan.safetensors")
  with pytest.raises(ValueError, match="orphan.safetensors"):
    scan(tmp_path)
