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
              ("sampling", "tiny ss_flow 25 step(s) CFG w=3"), ("sampling", "tiny slat_flow 1 step(s) CFG w=3"),
              ("decode", "SLatGaussianDecoder 2000 voxels"), ("render", "16000 Gaussians 128x128 x1 view"),
              ("render", "16000 Gaussians 128x128 x4 views"),
              ("trellis2", "ss tiny 512 tokens fwd"), ("trellis2", "shape tiny 256 tokens fwd+bwd"),
              ("trellis2", "shape tiny 256 tokens sampling 12 guided steps"),
              ("trellis2", "tex tiny vm_vd step, 256 tokens")]
  missing = [key for key in expected if key not in results]
  assert not missing, f"missing {missing}; have {sorted(results)}"
  for key, x in results.items():
    assert math.isfinite(x["seconds"]) and x["seconds"] > 0, key
    if x["section"] in ("attention", "ss_forward", "slat_forward", "distill_step") or "tokens f" in x["case"] \
        or "vm_vd step" in x["case"]:
      assert x["compile_s"] > 0 and x["memory_bytes"] > 0, key
      assert "neighbour tables" in x["case"] or x["flops"] > 0, key
  figures = report["figures"]
  for kind in ("fwd", "fwd+bwd"):
    assert figures[f"attention packed equal / best dense, {kind}"]["value"] > 0
  assert figures["slat tiny vm_vd step / sum of its evaluations"]["value"] > 0
  assert figures["trellis2 shape tiny 256 tokens: 12 guided steps / 1 step"]["value"] > 1


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



def test_residual_bytes_counts_what_the_backward_keeps():
  """sin(x @ w) keeps cos(x @ w) [8, 4] float32 (x is an input, not counted); under jax.checkpoint
  with nothing saveable it keeps only its inputs: nothing counted."""
  import jax
  import jax.numpy as jnp
  from mdt_jax.bench.memory_estimate import residual_bytes
  w, x = jax.ShapeDtypeStruct((4, 4), jnp.float32), jax.ShapeDtypeStruct((8, 4), jnp.float32)
  f = lambda w, x: jnp.sum(jnp.sin(x @ w))
  assert residual_bytes(f, w, x) == 8 * 4 * 4
  assert residual_bytes(jax.checkpoint(f, policy=jax.checkpoint_policies.nothing_saveable), w, x) == 0


def _ss_toy(samples):
  """ss_toy's config, student (float32) and abstract params, and a micro-batch of ``samples``."""
  import jax
  import jax.numpy as jnp
  from configs import distill
  from conversion import trellis
  config = distill.get_config("ss_toy")
  model = trellis.build_model(config.model.to_dict(), dtype=jnp.float32)
  params = jax.eval_shape(lambda: trellis.init_params(model, jax.random.key(0)))
  r = model.resolution
  batch = {"x0": jax.ShapeDtypeStruct((samples, r, r, r, model.in_channels), jnp.float32),
           "cond": jax.ShapeDtypeStruct((samples, 16, model.cond_channels), jnp.float32)}
  return config, model, params, batch


def test_memory_estimate_activations_grow_linearly_with_tokens():
  """The residuals of the objective: affine in the tokens (here samples x 64), and growing as the
  student's own pass with gradient (2 calls: VM, VD) does, not as the teacher's (4) or the
  no-gradient student's (3) would add to it."""
  import jax
  import jax.numpy as jnp
  from mdt_jax.bench import memory_estimate
  from mdt_jax.distill.objective import objective

  def residuals(samples):
    config, model, params, batch = _ss_toy(samples)
    apply = lambda p, x, t, c: model.apply({"params": p}, x, t, c)
    loss = lambda p, teacher, b: objective(p, teacher, b, jax.random.key(0), student_apply=apply,
                                           teacher_apply=apply, config=config)[0]
    doubled = lambda a: jax.ShapeDtypeStruct((2 * samples, *a.shape[1:]), jnp.float32)   # the VM and VD calls
    student = memory_estimate.residual_bytes(apply, params, doubled(batch["x0"]), jax.ShapeDtypeStruct(
        (2 * samples,), jnp.float32), doubled(batch["cond"]))
    return memory_estimate.residual_bytes(loss, params, params, batch), student

  (r2, s2), (r4, s4), (r6, _) = residuals(2), residuals(4), residuals(6)
  assert r6 - r4 == r4 - r2 > 0
  assert s4 - s2 <= r4 - r2 <= 1.1 * (s4 - s2), (r4 - r2, s4 - s2)


def test_memory_estimate_is_near_xla_plan_on_a_tiny_step():
  """On ss_toy (4 samples, no fsdp) the analytic peak is within [0.8, 2] x XLA:CPU's plan of the
  objective's value_and_grad, and its argument term is the exact bytes of params, teacher and batch."""
  import jax
  import numpy as np
  from mdt_jax.bench import memory_estimate
  from mdt_jax.distill.objective import objective
  config, model, params, batch = _ss_toy(4)
  exact = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in jax.tree.leaves((params, params, batch)))
  assert memory_estimate.tree_bytes((params, params, batch)) == exact
  terms = memory_estimate.objective_terms(config, model, params, params, batch,
                                          gradient_bytes=memory_estimate.tree_bytes(params))
  estimate = memory_estimate.Estimate(arguments=exact, state=0, gathered=0, accumulator=0, **terms)
  apply = lambda p, x, t, c: model.apply({"params": p}, x, t, c)
  loss = lambda p, teacher, b: objective(p, teacher, b, jax.random.key(0), student_apply=apply, teacher_apply=apply,
                                         config=config)
  fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}  # as mdt_jax/bench/train_memory.py
  stats = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(params, params, batch).compile(fast).memory_analysis()
  plan = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
  assert 0.8 * plan <= estimate.peak <= 2 * plan, (estimate, plan)
