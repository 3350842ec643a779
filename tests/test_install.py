"""The accelerator extras resolve (no CI machine has a GPU or TPU, so pip resolves them without
installing): each pulls jax 0.12.x with its plugin or libtpu at matching versions."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = {"cuda12": "jax-cuda12-plugin", "cuda13": "jax-cuda13-plugin", "tpu": "libtpu"}


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory):
  """extra -> {package name: version} that ``pip install --dry-run -e .[extra]`` would install."""
  out = tmp_path_factory.mktemp("pip_reports")
  procs = {extra: subprocess.Popen(
      [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
       "--report", str(out / f"{extra}.json"), "-e", f".[{extra}]"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for extra in EXTRAS}
  result = {}
  for extra, proc in procs.items():
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"pip could not resolve .[{extra}]:\n{err[-3000:]}"
    report = json.loads((out / f"{extra}.json").read_text())
    result[extra] = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report["install"]}
  return result


@pytest.mark.parametrize("extra", sorted(EXTRAS))
def test_extra_resolves_to_current_jax_with_its_runtime(resolutions, extra):
  packages = resolutions[extra]
  runtime = EXTRAS[extra]
  assert runtime in packages, f".[{extra}] does not pull {runtime}: {sorted(packages)}"
  jax_version = tuple(int(p) for p in packages["jax"].split(".")[:2])
  assert jax_version == (0, 12), packages["jax"]
  if extra.startswith("cuda"):
    # jax's plugins are released in lockstep with jaxlib; a mismatch fails at import on the GPU.
    assert packages[runtime] == packages["jaxlib"], (packages[runtime], packages["jaxlib"])
    assert f"{runtime.replace('plugin', 'pjrt')}" in packages
