"""TRELLIS.2's section of the benchmark (``launch/benchmark.py --only=trellis2``; part of ``--suite=gpu``).

At full size (the released configs of ``trellis2_param_shapes.json``, ~1.29 B parameters each, in
``--dtype``; the condition 1,029 DINOv3 tokens):

* the sparse-structure flow's forward at 16^3 = 4,096 tokens;
* the shape flow's forward and forward+backward (d/dparams of sum(v^2)) at 8,192 and 32,768 voxels
  (one sample, voxels of a sphere shell in a 64^3 grid: the sparse DiT has one token per voxel);
* sampling the shape stage at 8,192 voxels: the teacher's 12 guided steps (the app's settings: g 7.5,
  CFG-rescale 0.5, rescale_t 3, guidance on t in [0.6, 1]) against one unguided step (a 1-step
  student's cost), and their ratio;
* one VM+VD training step of each stage (the step training runs: objective, gradient, AdamW, the
  non-finite guard) at one sample a step (the shape and texture stages at 8,192 voxels, the texture
  with its ``concat_cond``), the student's blocks rematerialised, the teacher guided in TRELLIS.2's
  convention with the stage's g (7.5 / 7.5 / 1).

``--quick``: the same entries on the tiny fixture checkpoints' configs (``tests/fixtures/trellis2``:
8^3 structure, 256 voxels, 6 condition tokens) and the texture stage's training step alone (each step
compiles for ~30 s on 2 CPU cores; the texture's is the shape's program plus ``concat_cond``, and the
dense step is the suite's distill_step on TRELLIS's blocks). FLOPs: ``flops.trellis2_flow``.
"""
from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from conversion import trellis
from mdt_jax import stages
from mdt_jax.bench import flops as model_flops
from mdt_jax.bench import objectives as obj
from mdt_jax.bench.measure import measure
from mdt_jax.flow import jit_sample
from mdt_jax.generation.pipeline import StageSampling
from mdt_jax.models import registry
from mdt_jax.sparse import SparseTensor
from mdt_jax.train.state import init_state
from mdt_jax.train.step import make_train_step

# The released flows of the 512 pipeline (names of trellis2_param_shapes.json) and the fixtures' tiny ones.
RELEASED = {"ss": "ss_flow_img_dit_1_3B_64_bf16", "shape": "slat_flow_img2shape_dit_1_3B_512_bf16",
            "tex": "slat_flow_imgshape2tex_dit_1_3B_512_bf16"}
TINY = {"ss": "ss_flow", "shape": "shape_flow", "tex": "tex_flow"}
# The teacher's guidance g of each stage (the app's defaults) in the training step.
GUIDANCE = {"ss": 7.5, "shape": 7.5, "tex": 1.0}
# Our stage of each (dense sparse-structure latents, or features on voxels).
STAGES = {"ss": stages.SS, "shape": stages.SLAT, "tex": stages.SLAT}
SHAPE_SAMPLING = StageSampling(12, 7.5, (0.6, 1.0), 3.0, "trellis2", 0.5)


def configs(fixtures: Path, quick: bool) -> dict:
  """Stage -> model config ({"name", "args"}): the tiny fixtures' with ``quick``, else the released."""
  if quick:
    return {stage: trellis.read_config(fixtures / name) for stage, name in TINY.items()}
  listing = json.loads((fixtures / "trellis2_param_shapes.json").read_text())["models"]
  return {stage: {"name": listing[name]["name"], "args": listing[name]["args"]} for stage, name in RELEASED.items()}


def _shell(n: int, resolution: int = 64) -> np.ndarray:
  """The n voxels of a ``resolution``^3 grid nearest a sphere of radius 3/8 of it -> coords [n, 4] (b = 0)."""
  grid = np.stack(np.meshgrid(*[np.arange(resolution)] * 3, indexing="ij"), -1).reshape(-1, 3)
  dist = np.abs(np.linalg.norm(grid - (resolution - 1) / 2, axis=1) - 0.375 * resolution)
  rows = np.sort(np.argpartition(dist, n)[:n])
  return np.concatenate([np.zeros((n, 1), np.int64), grid[rows]], 1).astype(np.int32)


class Trellis2Section:
  """The section's entries for ``bench`` (a ``suite.Benchmark``: its options, report, repeats, dtype)."""

  def __init__(self, bench, fixtures: Path):
    self.bench, self.report = bench, bench.report
    self.quick = bench.o.quick
    self.configs = configs(fixtures, self.quick)
    self.rng = np.random.default_rng(0)

  def _model(self, stage: str, **overrides):
    config = self.configs[stage]
    model = registry.build_model({"name": config["name"], "args": {**config["args"], **overrides}},
                                 dtype=self.bench.compute_dtype())
    return model, jax.jit(lambda key: registry.init_params(model, key))(jax.random.key(0))

  def _cond(self, model, samples: int = 1):
    tokens = 6 if self.quick else 1 + 4 + (512 // 16) ** 2
    return jnp.asarray(self.rng.standard_normal((samples, tokens, model.cond_channels), np.float32))

  def _flops(self, model, tokens: int, cond) -> float:
    return model_flops.trellis2_flow(model, tokens, cond.shape[1])

  def _sparse(self, model, n: int, channels: int | None = None) -> SparseTensor:
    coords = _shell(n)
    feats = self.rng.standard_normal((n, channels or model.out_channels)).astype(np.float32)
    return SparseTensor.from_packed(coords, feats)

  def voxel_counts(self) -> tuple[int, ...]:
    return (256,) if self.quick else (8192, 32768)

  def run(self):
    t = jnp.full((1,), 0.5, jnp.float32)
    reps = self.bench.repeats()
    size = "tiny" if self.quick else "1.3B"

    model, params = self._model("ss")
    r = model.resolution
    x = jnp.asarray(self.rng.standard_normal((1, r, r, r, model.in_channels), np.float32))
    cond = self._cond(model)
    measure(self.report, "trellis2", f"ss {size} {r ** 3} tokens fwd", registry.velocity(model), params, x, t, cond,
            flops=self._flops(model, r ** 3, cond), repeats=reps)
    del params

    model, params = self._model("shape")
    velocity = registry.velocity(model)
    fwd = obj.evaluation_fn(velocity, "fwd")
    cond = self._cond(model)
    for n in self.voxel_counts():
      x = self._sparse(model, n)
      flops = self._flops(model, n, cond)
      measure(self.report, "trellis2", f"shape {size} {n} tokens fwd", fwd, params, x, t, cond, flops=flops,
              repeats=reps, notes=f"capacity {x.capacity}")
      measure(self.report, "trellis2", f"shape {size} {n} tokens fwd+bwd", obj.evaluation_fn(velocity, "fwd+bwd"),
              params, x, t, cond, flops=3 * flops, repeats=reps)
    self._sampling(model, params, cond)
    del params

    for stage in ("tex",) if self.quick else ("ss", "shape", "tex"):
      self._step(stage)

  def _sampling(self, model, params, cond):
    """The shape stage at the first voxel count: 12 guided steps against one unguided step."""
    n = self.voxel_counts()[0]
    x = self._sparse(model, n)
    run = jit_sample(registry.velocity(model))
    size = "tiny" if self.quick else "1.3B"
    seconds = {}
    for label, settings in (("1 step", StageSampling(1, 1.0, (0.0, 1.0), 1.0, "trellis2")),
                            ("12 guided steps", SHAPE_SAMPLING)):
      f = lambda p, x, c, s=settings: run(p, x, c, **s.kwargs())[0].feats
      seconds[label] = measure(self.report, "trellis2", f"shape {size} {n} tokens sampling {label}", f, params, x, cond,
                               repeats=self.bench.repeats(), notes=str(settings)).seconds
    self.report.figure(f"trellis2 shape {size} {n} tokens: 12 guided steps / 1 step",
                       seconds["12 guided steps"] / seconds["1 step"], "a 1-step student's speed-up; target >= 12")

  def _step(self, stage: str):
    """One VM+VD AdamW step of ``stage`` at one sample (student rematerialised)."""
    teacher, params = self._model(stage)
    student = registry.build_model({"name": self.configs[stage]["name"],
                                    "args": {**self.configs[stage]["args"], "use_checkpoint": True}},
                                   dtype=self.bench.compute_dtype())
    cond = self._cond(teacher)
    if not STAGES[stage].sparse:
      r = teacher.resolution
      x0 = self.rng.standard_normal((1, r, r, r, teacher.out_channels)).astype(np.float32)
      batch = {"x0": jnp.asarray(x0), "cond": cond}
      tokens = r ** 3
    else:
      tokens = self.voxel_counts()[0]
      x0 = self._sparse(teacher, tokens)
      batch = {"x0": x0, "cond": cond}
      if teacher.in_channels > teacher.out_channels:
        batch["concat_cond"] = x0.replace_feats(jnp.asarray(
            self.rng.standard_normal((x0.capacity, teacher.in_channels - teacher.out_channels)), jnp.float32))
    config = obj.config_for("vm_vd")
    config.update(guidance_convention="trellis2", cfg_teacher_vm=GUIDANCE[stage], cfg_teacher_vd=GUIDANCE[stage])
    student_apply, teacher_apply = registry.velocity(student), registry.velocity(teacher)
    evals = obj.network_evaluations(config, student_apply, teacher_apply, params, params, batch)
    flops = sum(obj.COST[e.kind] * e.samples * self._flops(teacher, tokens, cond) for e in evals)
    optimizer = optax.adamw(1e-4, weight_decay=0.0)
    step = make_train_step(config, optimizer, student_apply=student_apply, teacher_apply=teacher_apply, sparse=False)
    state = init_state(jax.tree.map(jnp.copy, params), optimizer, config.ema_rates, seed=0)
    frozen = {"teacher": params, "image_encoder": {}}
    measure(self.report, "trellis2", f"{stage} {'tiny' if self.quick else '1.3B'} vm_vd step, {tokens} tokens", step,
            state, frozen, jax.tree.map(lambda a: a[None], batch), flops=flops, repeats=self.bench.repeats(), carry=1,
            donate_argnums=(0,), notes=f"batch 1, g {GUIDANCE[stage]}; {obj.describe(evals, 1)}")
