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


# docs/design.md, Layout: each folder imports only those before it (the package root: mdt_jax/*.py).
LAYERS = ("sparse", "representations", "models", "render", "root", "flow", "distill", "conversion", "data", "generation", "eval", "train",
          "bench", "demo")


def _layer(module: str) -> str | None:
  """The layer of an imported module (launch and configs are their own), or None outside the repo."""
  parts = module.split(".")
  if parts[0] in ("conversion", "launch", "configs"):
    return parts[0]
  if parts[0] != "mdt_jax":
    return None
  return parts[1] if len(parts) > 1 and (ROOT / "mdt_jax" / parts[1]).is_dir() else "root"


def _imported_layers(path: Path) -> set[str]:
  layers = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      modules = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      modules = [f"mdt_jax.{a.name}" for a in node.names] if node.module == "mdt_jax" else [node.module]
    else:
      continue
    layers |= {layer for layer in map(_layer, modules) if layer}
  return layers


def test_layer_pattern_reads_imports(tmp_path):
  path = tmp_path / "x.py"
  path.write_text("import jax\nfrom mdt_jax import cli, eval as ev\nfrom mdt_jax.train.step import x\n"
                  "from configs import distill\nimport conversion.trellis\n")
  assert _imported_layers(path) == {"root", "eval", "train", "configs", "conversion"}


def test_imports_follow_the_layout():
  found = []
  for path in _python_files("mdt_jax", "conversion"):
    own = "conversion" if path.parts[len(ROOT.parts)] == "conversion" else _layer(
        ".".join(path.relative_to(ROOT).with_suffix("").parts))
    allowed = set(LAYERS[:LAYERS.index(own) + 1])
    bad = _imported_layers(path) - allowed
    if bad:
      found.append(f"{path.relative_to(ROOT)} ({own}) imports {sorted(bad)}")
  assert not found, "imports against docs/design.md's layout:\n" + "\n".join(found)
