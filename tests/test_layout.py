"""The stage objects (mdt_jax/stages.py) and the layout rules of docs/design.md, read from the source."""
import ast
import re
from pathlib import Path

import pytest

from configs import distill
from mdt_jax import stages
from mdt_jax.data import toy_inputs, trellis_builder
from mdt_jax.train import validation

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("mdt_jax", "launch", "configs", "conversion")
STAGE_DEFINITIONS = ROOT / "mdt_jax" / "stages.py"
# `stage == ...`, `stage.name != ...`, or a stage name compared as a string literal.
STAGE_COMPARISON = re.compile(r"""\bstage(\.name)?\s*[!=]=|[!=]=\s*["'](ss|slat)["']|["'](ss|slat)["']\s*[!=]=""")


def _python_files(*folders):
  return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_stages_resolve_by_name_and_pass_through():
  assert stages.get("ss") is stages.SS and stages.get("slat") is stages.SLAT
  assert stages.get(stages.SLAT) is stages.SLAT
  assert stages.NAMES == ("ss", "slat")
  assert not stages.SS.sparse and stages.SLAT.sparse
  assert stages.SS.label == "stage 1 (sparse structure)" and stages.SLAT.label == "stage 2 (structured latents)"
  assert stages.SS.headline == "1nna" and stages.SLAT.headline == "fd"
  assert "ElasticSLatFlowModel" in stages.SLAT.flow_models and "SparseStructureFlowModel" in stages.SS.flow_models


def test_unknown_stage_is_one_error_naming_the_field_and_the_known_names():
  with pytest.raises(ValueError, match=r"^config\.stage must be one of \('ss', 'slat'\), got 'dense'$"):
    stages.get("dense")
  with pytest.raises(ValueError, match=r"^--step_sizes entry must be one of"):
    stages.get("SS", field="--step_sizes entry")
  with pytest.raises(ValueError, match=r"^stage must be one of \('ss', 'slat'\), got 'x'$"):
    toy_inputs.ToyInputs(stage="x")
  with pytest.raises(ValueError, match=r"^stage must be one of"):
    trellis_builder.trellis_config("/tmp", "x", "latents")


def test_toy_inputs_take_a_stage_or_its_name():
  assert toy_inputs.ToyInputs(stage="slat") == toy_inputs.ToyInputs(stage=stages.SLAT)
  assert toy_inputs.ToyInputs().stage is stages.SS


@pytest.mark.parametrize("variant", distill.VARIANTS)
def test_every_config_names_a_stage_whose_flows_include_its_model(variant):
  config = distill.get_config(variant)
  assert config.model.name in stages.get(config.stage).flow_models


def test_training_config_checks_the_stage_and_its_model_first():
  config = distill.get_config("ss_toy")
  config.stage = "sparse"
  with pytest.raises(ValueError, match=r"config\.stage must be one of \('ss', 'slat'\), got 'sparse'"):
    validation.check(config, mesh=None)
  config = distill.get_config("ss_toy")
  config.model.name = "SLatFlowModel"
  with pytest.raises(ValueError, match=r"config\.model\.name 'SLatFlowModel' is not a flow of stage 'ss'"):
    validation.check(config, mesh=None)


def test_stage_pattern_finds_comparisons():
  for line in ('if stage == "ss":', "x = config.stage != 'slat'", 'if "slat" == kind:', "a = b == 'ss'",
               "if self.stage.name == name:"):
    assert STAGE_COMPARISON.search(line), line
  for line in ('if stage.sparse:', 'variant == "ss_toy"', 'stage = stages.get(name)', 'x = {"ss": 1}'):
    assert not STAGE_COMPARISON.search(line), line


def test_no_stage_string_comparison_outside_the_stage_definitions():
  found = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
           for path in _python_files(*SOURCES) if path != STAGE_DEFINITIONS
           for i, line in enumerate(path.read_text().splitlines(), 1) if STAGE_COMPARISON.search(line)]
  assert not found, "stage names compared as strings (use mdt_jax.stages):\n" + "\n".join(found)


def _imports(path: Path) -> set[str]:
  """Top-level package names (and mdt_jax.<subpackage>) that a file imports."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      modules = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    else:
      continue
    for module in modules:
      parts = module.split(".")
      names.add(parts[0])
      if parts[0] == "mdt_jax" and len(parts) > 1:
        names.add(f"mdt_jax.{parts[1]}")
  return names


# docs/design.md, Layout: (folders, imports they may not make).
FORBIDDEN = [
    (("mdt_jax", "conversion"), {"launch", "configs"}),
    (("mdt_jax/models", "mdt_jax/sparse", "mdt_jax/flow", "mdt_jax/distill"), {"conversion"}),
    (("mdt_jax/sparse",), {"mdt_jax.models"}),
    (("mdt_jax/models", "mdt_jax/sparse", "mdt_jax/flow", "mdt_jax/distill", "mdt_jax/data", "mdt_jax/eval",
      "mdt_jax/generation", "mdt_jax/bench"), {"mdt_jax.train", "mdt_jax.demo"}),
]


def test_imports_follow_the_layout():
  found = []
  for folders, forbidden in FORBIDDEN:
    for path in _python_files(*folders):
      bad = _imports(path) & forbidden
      if bad:
        found.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
  root_modules = [p for p in (ROOT / "mdt_jax").glob("*.py")]
  for path in root_modules:  # the package root's modules import only each other, sparse and models
    bad = {n for n in _imports(path) if n.startswith("mdt_jax.")} - {f"mdt_jax.{p.stem}" for p in root_modules} - {
        "mdt_jax.sparse", "mdt_jax.models"}
    if bad:
      found.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
  assert not found, "\n".join(found)
