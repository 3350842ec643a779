"""launch/benchmark.py --suite=gpu --quick: the GPU suite's every section at tiny sizes, on CPU."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_suite_quick_runs_every_section_and_writes_its_figures(tmp_path):
  out = tmp_path / "bench.json"
  r = subprocess.run([sys.executable, "launch/benchmark.py", "--suite=gpu", "--quick", f"--out={out}"], cwd=ROOT,
                     env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["conditions"]["dtype"] == "bfloat16" and report["conditions"]["suite"] == "gpu"
  results = {(x["section"], x["case"]): x for x in report["results"]}
  expected = [("matmul", "bfloat16 4096^3 GEMM"),
              ("attention", "varlen packed 4 segments unequal (1024 tokens) fwd+bwd"),
              ("attention", "blocked packed 4 segments equal (1024 tokens) fwd"),
              ("attention", "xla dense 4x256 fwd+bwd"),
              ("ss_forward", "tiny fwd"), ("ss_forward", "tiny B=2 fwd+bwd"),
              ("slat_forward", "tiny 2000 voxels fwd"), ("slat_forward", "tiny 2000 voxels fwd+bwd"),
              ("distill_step", "ss tiny vm_vd"), ("distill_step", "slat tiny vm_vd"),
              ("sampling", "tiny ss_flow 25 step(s) CFG w=3"), ("sampling", "tiny slat_flow 1 step(s) CFG w=3")]
  missing = [key for key in expected if key not in results]
  assert not missing, f"missing {missing}; have {sorted(results)}"
  for key, x in results.items():
    assert math.isfinite(x["seconds"]) and x["seconds"] > 0, key
    if x["section"] in ("attention", "ss_forward", "slat_forward", "distill_step"):
      assert x["compile_s"] > 0 and x["memory_bytes"] > 0, key
      assert "neighbour tables" in x["case"] or x["flops"] > 0, key
  figures = report["figures"]
  for kind in ("fwd", "fwd+bwd"):
    assert figures[f"attention packed equal / best dense, {kind}"]["value"] > 0
  assert figures["slat tiny vm_vd step / sum of its evaluations"]["value"] > 0


def test_flash_memory_stand_in_plans_no_score_matrix():
  """The AOT memory plans' attention stand-in: attention's shapes and gradients, and a fwd+bwd plan
  far below one [Lq, Lk] float32 score matrix (the plain path plans several)."""
  import jax
  import jax.numpy as jnp
  from mdt_jax.bench import flash_memory
  from mdt_jax.models.attention import attention
  q = jax.ShapeDtypeStruct((1, 2048, 2, 8), jnp.float32)
  kv = jax.ShapeDtypeStruct((1, 1536, 2, 8), jnp.float32)
  scores = 2048 * 1536 * 4

  def plan(attend):
    loss = lambda q, k, v: jnp.sum(jnp.square(attend(q, k, v)))
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv).compile()
    grads = jax.eval_shape(jax.grad(loss, argnums=(0, 1, 2)), q, kv, kv)
    assert [g.shape for g in grads] == [q.shape, kv.shape, kv.shape]
    return compiled.memory_analysis().temp_size_in_bytes

  assert plan(flash_memory.flash_memory_attention) < scores / 8
  assert plan(lambda q, k, v: attention(q, k, v, implementation="xla")) > scores

