"""Parity of every model case in the fixture directory with the upstream PyTorch outputs.

Cases come from the directory scan; a case whose model kind is not implemented yet is xfail.
fp32 checkpoints: elementwise atol = rtol = 1e-5; ``use_fp16`` checkpoints: atol 1e-2.
"""
import jax
import numpy as np
import pytest

from conftest import assert_close, channels_last
from conversion.trellis import load_checkpoint, read_config
from fixture_scan import cases_of

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

MODEL_CASES = cases_of("model")


def _load(case, dtype=None):
  try:
    return load_checkpoint(case.stem, dtype=dtype)
  except NotImplementedError as e:
    pytest.xfail(str(e))


def _tolerance(case):
  return 1e-2 if read_config(case.stem)["args"].get("use_fp16") else 1e-5


def run_ss_flow(model, params, z):
  """-> (output, reference, intermediates {name: (ours, reference)}) for an SS-flow case."""
  out, state = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c, capture_intermediates=True))(
      params, channels_last(z["x"]), z["t"] / 1000.0, z["cond"])
  inter = state["intermediates"]
  pairs = {}
  if "t_emb" in z:
    pairs["t_emb"] = (inter["t_embedder"]["__call__"][0], z["t_emb"])
  if "block0_in" in z:
    pairs["block0_in"] = (inter["input_layer"]["__call__"][0] + params["pos_emb"][None], z["block0_in"])
  return out, channels_last(z["out"]), pairs


def run_ss_decoder(model, params, z):
  """-> (logits, reference, {}) for a SparseStructureDecoder case (z and logits channels-last)."""
  out = jax.jit(lambda p, z: model.apply({"params": p}, z))(params, channels_last(z["z"]))
  return out, channels_last(z["out"]), {}


def run_slat_flow(model, params, z):
  """-> (output feats, reference, {name: (ours, reference)}) for a SLat-flow case: the stored
  ``inter/<module>_{feats,coords}`` of every stage (rows in the reference's order) and ``t_emb``."""
  from mdt_jax.sparse import SparseTensor
  x = SparseTensor.from_packed(z["coords"], z["feats"])
  out, state = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c, capture_intermediates=True))(
      params, x, z["t"] / 1000.0, z["cond"])
  inter = state["intermediates"]
  # The transformer blocks' tokens [1, cap, C] sit on the sites of the last input block.
  coarse = inter[f"input_blocks_{len(model.stages) * model.num_io_res_blocks - 1}"]["__call__"][0]
  stages = {}
  for key in z.files:
    if key.startswith("inter/") and key.endswith("_feats"):
      name = key.removeprefix("inter/").removesuffix("_feats")
      value = inter[name.replace(".", "_")]["__call__"][0]
      stages[name] = (x.replace_feats(value) if name == "input_layer" else
                      coarse.replace_feats(value[0]) if name.startswith("blocks.") else value)
  pairs = {"t_emb": (inter["t_embedder"]["__call__"][0], z["inter/t_emb"])}
  for name, tensor in stages.items():
    coords, feats = tensor.to_packed()
    pairs[f"{name} coords"] = (coords, z[f"inter/{name}_coords"])
    pairs[f"{name} feats"] = (feats, z[f"inter/{name}_feats"])
  coords, feats = out.to_packed()
  pairs["output coords"] = (coords, z["coords"])
  return feats, z["out"], pairs


RUNNERS = {"SparseStructureFlowModel": run_ss_flow, "SparseStructureDecoder": run_ss_decoder,
           "SLatFlowModel": run_slat_flow, "ElasticSLatFlowModel": run_slat_flow}


@pytest.mark.parametrize("case", MODEL_CASES, ids=str)
def test_model_matches_reference(case):
  model, params = _load(case)
  run = RUNNERS.get(case.model_name)
  if run is None:
    pytest.xfail(f"not implemented yet: {case.model_name}")
  out, ref, intermediates = run(model, params, np.load(case.io))
  tol = _tolerance(case)
  assert out.dtype == np.float32
  for name, (ours, theirs) in intermediates.items():
    assert_close(ours, theirs, atol=tol, rtol=tol, what=f"{case.name} {name}")
  assert_close(out, ref, atol=tol, rtol=tol, what=f"{case.name} output")


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if c.model_name == "SparseStructureFlowModel"
                                  and read_config(c.stem)["args"].get("use_fp16")], ids=str)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_trunk_stays_close(case, dtype):
  """TRELLIS's fp16 arithmetic (float16 trunk) and our TPU/GPU default (bfloat16) vs the fp16 golden."""
  model, params = _load(case, dtype=getattr(jax.numpy, dtype))
  out, ref, _ = run_ss_flow(model, params, np.load(case.io))
  assert out.dtype == np.float32 and all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  assert_close(out, ref, atol=1e-2 if dtype == "float16" else 5e-2, rtol=0, what=f"{case.name} {dtype}")


@pytest.mark.parametrize("case", [c for c in MODEL_CASES if c.model_name in ("SLatFlowModel", "ElasticSLatFlowModel")],
                         ids=str)
@pytest.mark.parametrize("attention, conv", [("blocked", "scan"), ("varlen", "gathered")])
def test_sparse_model_matches_reference_on_each_path(case, attention, conv, monkeypatch):
  """The SLat model through the CPU's long-sequence path (blocked attention, scanned conv taps) and
  the accelerators' (variable-length attention, one gathered conv GEMM); the automatic choice above
  is the plain attention on CPU at these sizes."""
  monkeypatch.setenv("MDT_ATTENTION", attention)
  monkeypatch.setenv("MDT_SPARSE_CONV", conv)
  model, params = _load(case)
  out, ref, _ = run_slat_flow(model, params, np.load(case.io))
  tol = _tolerance(case)
  assert_close(out, ref, atol=tol, rtol=tol, what=f"{case.name} output, {attention} attention, {conv} conv")
