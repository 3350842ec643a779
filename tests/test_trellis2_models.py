"""TRELLIS.2's flow transformers against the upstream goldens: every model case of the TRELLIS.2
fixture directory through the public API (outputs, and the named intermediates they store), and the
RoPE angles of the voxels. Tolerance (fixtures README section 6, the issue's rule): the largest error
relative to the reference's largest value, 1e-4 in float32, 5e-2 for a ``dtype="bfloat16"`` model."""
import re

import jax
import numpy as np
import pytest

from conftest import assert_close, channels_last
from conversion.trellis import load_checkpoint, read_config
from fixture_scan import TRELLIS2_DIR, cases_of
from mdt_jax.models import registry
from mdt_jax.models.rope import rotation
from mdt_jax.models.trellis2_flow import Trellis2Flow
from mdt_jax.sparse import SparseTensor

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

MODEL_CASES = cases_of("model", TRELLIS2_DIR)


def _tolerance(case):
  return 5e-2 if read_config(case.stem)["args"].get("dtype") == "bfloat16" else 1e-4


def _close(ours, theirs, tol, what):
  assert_close(ours, theirs, atol=tol, rtol=0, relative_to_max=True, what=what)


def run_trellis2_model(model, params, z):
  """-> (output [reference layout rows], reference, {name: (ours, reference)}) through
  ``model.apply({"params": params}, x, t, cond[, concat_cond=c])``, intermediates captured."""
  apply = jax.jit(lambda p, *a, **kw: model.apply({"params": p}, *a, capture_intermediates=True, **kw))
  if "coords" not in z:
    out, state = apply(params, channels_last(z["x"]), z["t"] / 1000.0, z["cond"])
    ref, n, rows = channels_last(z["out"]), model.resolution ** 3, slice(None)
  else:
    x = SparseTensor.from_packed(z["coords"], z["feats"])
    kwargs = {"concat_cond": SparseTensor.from_packed(z["coords"], z["concat_feats"])} if "concat_feats" in z else {}
    out, state = apply(params, x, z["t"] / 1000.0, z["cond"], **kwargs)
    coords, out = out.to_packed()
    np.testing.assert_array_equal(coords, z["coords"])  # same rows in the same order
    ref, n, rows = z["out"], len(z["coords"]), slice(0, len(z["coords"]))
  inter = state["intermediates"]
  tokens = lambda name: np.asarray(inter[name]["__call__"][0]).reshape(-1, n, model.model_channels)[:, rows]
  pairs = {}
  if "inter/t_emb" in z:
    pairs["t_emb"] = (inter["t_embedder"]["__call__"][0], z["inter/t_emb"])
  if "inter/block0_out" in z:
    pairs["block0_out"] = (tokens("blocks_0").reshape(z["inter/block0_out"].shape), z["inter/block0_out"])
  if "inter/blocks_last_out" in z:
    last = f"blocks_{model.num_blocks - 1}"
    pairs["blocks_last_out"] = (tokens(last).reshape(z["inter/blocks_last_out"].shape), z["inter/blocks_last_out"])
  if "inter/input_layer" in z:
    pairs["input_layer"] = (tokens("input_layer").reshape(z["inter/input_layer"].shape), z["inter/input_layer"])
  return out, ref, pairs


@pytest.mark.parametrize("case", MODEL_CASES, ids=str)
def test_trellis2_model_matches_reference(case):
  model, params = load_checkpoint(case.stem)
  assert isinstance(model, Trellis2Flow) and registry.family_of(model) == "trellis2"
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  out, ref, intermediates = run_trellis2_model(model, params, np.load(case.io))
  tol = _tolerance(case)
  assert out.dtype == np.float32
  for name, (ours, theirs) in intermediates.items():
    _close(ours, theirs, tol, f"{case.name} {name}")
  _close(out, ref, tol, f"{case.name} output")


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if "inter/rope_cos" in np.load(c.io).files], ids=str)
def test_trellis2_rope_angles_match_reference(case):
  model, _ = load_checkpoint(case.stem)
  z = np.load(case.io)
  if "coords" in z:
    coords = z["coords"][:, 1:]
  else:
    r = model.resolution
    coords = np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
  cos, sin = rotation(coords, model.head_dim, tuple(model.rope_freq))
  _close(cos, z["inter/rope_cos"], 1e-6, f"{case.name} rope cos")
  _close(sin, z["inter/rope_sin"], 1e-6, f"{case.name} rope sin")


def test_trellis2_bf16_dtype_rule_is_the_config_dtype():
  """``dtype="bfloat16"``: the blocks' matmuls run in bfloat16 (float32 when ``dtype=`` overrides the
  config), parameters stay float32, the output is float32 (traced only: nothing compiles)."""
  bf16 = [c for c in MODEL_CASES if read_config(c.stem)["args"].get("dtype") == "bfloat16"]
  if not bf16:
    pytest.skip("no bfloat16 case in the fixture directory")
  model, params = load_checkpoint(bf16[0].stem)
  forced, _ = load_checkpoint(bf16[0].stem, dtype=np.float32)
  assert model.dtype == jax.numpy.bfloat16 and forced.dtype == np.float32
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  inputs = model.example_inputs(2)
  jaxpr = lambda m: str(jax.make_jaxpr(lambda p: m.apply({"params": p}, *inputs))(params))
  bf16_matmul = re.compile(r"bf16\[[^\]]*\] = dot_general")
  assert bf16_matmul.search(jaxpr(model)) and "bf16" not in jaxpr(forced)
  assert jax.eval_shape(lambda p: model.apply({"params": p}, *inputs), params).dtype == np.float32


def test_trellis2_sparse_padding_rows_stay_zero():
  case = next(c for c in MODEL_CASES if "coords" in np.load(c.io) and "concat_feats" not in np.load(c.io))
  model, params = load_checkpoint(case.stem)
  z = np.load(case.io)
  x = SparseTensor.from_packed(z["coords"], z["feats"], capacity=len(z["coords"]) + 5)
  out = model.apply({"params": params}, x, z["t"] / 1000.0, z["cond"])
  np.testing.assert_array_equal(np.asarray(out.feats)[len(z["coords"]):], 0)
  _close(out.to_packed()[1], z["out"], _tolerance(case), f"{case.name} output with padding")


def test_trellis2_fresh_init_follows_initialization():
  """The fixture's "scaled": blocks N(0, 2/(5C)), residual outputs N(0, 1/(5NC)), input_layer
  N(0, 1/C_in) ("vanilla" is TRELLIS's xavier); adaLN, out_layer and the per-block modulation at zero."""
  args = read_config(TRELLIS2_DIR / "ss_flow")["args"]
  assert args["initialization"] == "scaled"
  model = registry.build_model({"name": "SparseStructureFlowModel", "args": args})
  params = jax.jit(lambda key: registry.init_params(model, key))(jax.random.key(0))
  blocks, c, n = params["blocks"], model.model_channels, model.num_blocks
  std = lambda a: float(np.std(np.asarray(a)))
  expected = {"qkv": (2 / (5 * c)) ** 0.5, "out": (5 * n * c) ** -0.5, "input": model.in_channels ** -0.5}
  assert std(blocks["self_attn"]["to_qkv"]["kernel"]) == pytest.approx(expected["qkv"], rel=0.05)
  assert std(blocks["self_attn"]["to_out"]["kernel"]) == pytest.approx(expected["out"], rel=0.05)
  assert std(params["input_layer"]["kernel"]) == pytest.approx(expected["input"], rel=0.2)
  for zero in (blocks["modulation"], params["adaLN_modulation_1"]["kernel"], params["out_layer"]["kernel"]):
    assert not np.any(np.asarray(zero))


@pytest.mark.parametrize("attention", ["blocked", "varlen"])
def test_trellis2_sparse_model_matches_reference_on_each_attention_path(attention, monkeypatch):
  """The sparse DiT through the CPU's long-sequence path (blocked) and the accelerators' (varlen);
  the automatic choice above is the plain attention on CPU at these sizes."""
  monkeypatch.setenv("MDT_ATTENTION", attention)
  case = next(c for c in MODEL_CASES if "concat_feats" in np.load(c.io).files)
  model, params = load_checkpoint(case.stem)
  out, ref, _ = run_trellis2_model(model, params, np.load(case.io))
  _close(out, ref, _tolerance(case), f"{case.name} output, {attention} attention")
