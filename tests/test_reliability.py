"""Reliability pieces without a training run: per-process checkpoint checksums, the workdir's run
fingerprint, and the command line's one-line errors (one subprocess per bad input)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from configs import teacher as teacher_configs
from mdt_jax.train import integrity
from mdt_jax.errors import ConfigMismatch, UnusableWorkdir
from mdt_jax.train.workdir import RunDir

ROOT = Path(__file__).resolve().parents[1]


def _step_dir(base: Path) -> Path:
  """A step as two processes write it with OCDBT: each its own files, process 0 the shared ones."""
  files = {"_CHECKPOINT_METADATA": b"{}", "state/_METADATA": b"tree", "state/array_metadatas/process_1": b"m1",
           "state/ocdbt.process_0/d/aa": b"0" * 1000, "state/ocdbt.process_1/d/bb": b"1" * 1000}
  for name, data in files.items():
    (base / name).parent.mkdir(parents=True, exist_ok=True)
    (base / name).write_bytes(data)
  return base


def test_each_process_records_and_verifies_the_files_it_wrote(tmp_path):
  step = _step_dir(tmp_path / "16")
  for index in (0, 1):
    integrity.record(step, index, 2)
  manifests = [json.loads((step / integrity.MANIFEST.format(i)).read_text())["files"] for i in (0, 1)]
  assert sorted(manifests[0]) == ["_CHECKPOINT_METADATA", "state/_METADATA", "state/ocdbt.process_0/d/aa"]
  assert sorted(manifests[1]) == ["state/array_metadatas/process_1", "state/ocdbt.process_1/d/bb"]
  assert integrity.verify(step, 0, 2) is None and integrity.verify(step, 1, 2) is None
  data = bytearray((step / "state/ocdbt.process_1/d/bb").read_bytes())
  data[500] ^= 4
  (step / "state/ocdbt.process_1/d/bb").write_bytes(bytes(data))
  assert integrity.verify(step, 0, 2) is None  # process 0 did not write it ...
  assert "state/ocdbt.process_1/d/bb: checksum mismatch" in integrity.verify(step, 1, 2)  # ... process 1 did
  assert "state/ocdbt.process_1/d/bb: checksum mismatch" in integrity.verify(step, 0, 1)  # one process: every file
  (step / "state/_METADATA").write_bytes(b"tre")
  assert integrity.verify(step, 0, 2) == "state/_METADATA has 3 bytes, 4 when saved"


def test_recorder_writes_the_manifest_once_the_step_has_landed(tmp_path):
  recorder = integrity.Recorder(0, 1)
  recorder.after_save(tmp_path / "8")
  recorder.after_save(tmp_path / "12")  # never lands (a failed save): given up at wait()
  _step_dir(tmp_path / ".8.tmp").rename(tmp_path / "8")
  recorder.wait()
  assert integrity.verify(tmp_path / "8") is None and not (tmp_path / "12").exists()


def _config(**overrides):
  config = teacher_configs.get_config("ss_toy")
  config.update_from_flattened_dict(overrides)
  return config


def test_run_fingerprint_allows_cadence_changes_and_names_run_changing_fields(tmp_path):
  run_dir = RunDir(tmp_path / "run")
  run_dir.check_config(_config())  # a new workdir: anything goes, nothing written
  assert not run_dir.path.exists()
  run_dir.start(_config())
  stored = json.loads((run_dir.path / "run.json").read_text())
  run_dir.check_config(_config(total_steps=5000, log_every=1, checkpoint_every=7, **{"mesh.data": 2}))
  run_dir.start(_config(total_steps=5000))
  assert json.loads((run_dir.path / "run.json").read_text()) == stored  # written once, at the first start
  assert json.loads((run_dir.path / "config.json").read_text())["total_steps"] == 5000
  with pytest.raises(ConfigMismatch, match=r"config\.seed: 0 in this workdir's run, 3 now; config\.weight_decay: "
                                           r"0\.0 in this workdir's run, 0\.5 now"):
    run_dir.check_config(_config(seed=3, weight_decay=0.5, total_steps=9))
  legacy = RunDir(tmp_path / "legacy")  # a workdir written before run.json: judged by its config.json
  legacy.path.mkdir()
  (legacy.path / "config.json").write_text(_config().to_json_best_effort())
  with pytest.raises(ConfigMismatch, match=r"config\.lr: 0\.001 in this workdir's run, 0\.01 now"):
    legacy.check_config(_config(lr=1e-2))
  (legacy.path / "config.json").write_bytes(b"\xff\xfe{")
  with pytest.raises(UnusableWorkdir, match=r"legacy/config.json: unreadable \(UnicodeDecodeError"):
    legacy.check_config(_config())
  (tmp_path / "file").write_text("")
  with pytest.raises(UnusableWorkdir, match="file: exists and is not a directory"):
    RunDir(tmp_path / "file")


@pytest.mark.parametrize("args, message", [
    (["--config.nonexistent=1"], "unknown config field 'nonexistent'"),
    (["--config.objective=xx"], "config.objective must be one of"),
    (["--config=BAD"], "bad.py: (unicode error) 'utf-8' codec can't decode"),
    (["--workdir=FILE"], "afile: exists and is not a directory"),
])
def test_train_command_line_errors_are_one_line(args, message, tmp_path):
  (tmp_path / "bad.py").write_bytes(b"\xff\xfe def get_config(): pass")
  (tmp_path / "afile").write_text("")
  subs = {"BAD": str(tmp_path / "bad.py"), "FILE": str(tmp_path / "afile")}
  args = [a.replace("BAD", subs["BAD"]).replace("FILE", subs["FILE"]) for a in args]
  base = {"--config": "configs/teacher.py:ss_toy", "--workdir": str(tmp_path / "run")}
  base.update(a.split("=", 1) for a in args if a.split("=", 1)[0] in base)
  cmd = [sys.executable, "launch/train.py", *[f"{k}={v}" for k, v in base.items()],
         *[a for a in args if a.split("=", 1)[0] not in base]]
  r = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
                     timeout=120)
  assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
  errors = [line for line in r.stderr.splitlines() if "error:" in line]
  assert len(errors) == 1 and errors[0].startswith("train.py: error: ") and message in errors[0], r.stderr
  assert not (tmp_path / "run").exists()


def test_traceback_env_shows_the_traceback(tmp_path):
  (tmp_path / "afile").write_text("")
  r = subprocess.run([sys.executable, "launch/train.py", "--config=configs/teacher.py:ss_toy",
                      f"--workdir={tmp_path / 'afile'}"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                     env=dict(os.environ, JAX_PLATFORMS="cpu", MDT_TRACEBACK="1"))
  assert r.returncode != 0 and "Traceback" in r.stderr and "UnusableWorkdir: --workdir" in r.stderr
