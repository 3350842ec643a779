"""MDT-dist on TRELLIS.2's three stages: the tiny ``configs/distill.py`` variants train through the
one step builder (``mdt_jax.train.step``) and the objective code, dense (sparse structure) and
sparse (shape; texture with ``concat_cond``), with the teacher guided in TRELLIS.2's convention."""
import jax
import numpy as np
import pytest

from configs import distill as distill_configs
from fixture_scan import TRELLIS2_DIR
from mdt_jax import distill, stages
from mdt_jax.models import registry
from mdt_jax.sparse import SparseShards
from mdt_jax.train import models
from mdt_jax.train.optimizer import make_optimizer
from mdt_jax.train.state import init_state
from mdt_jax.train.step import make_train_step


def _batch(config, student):
  """One step's synthetic batch as one micro-batch (leading axis 1): latents, condition tokens and,
  for the texture stage, the shape latent on the same voxels (the shape fixture's voxels, 2 samples)."""
  rng = np.random.default_rng(0)
  b = config.batch_size_per_device
  cond = rng.standard_normal((1, b, 6, student.cond_channels)).astype(np.float32)
  if config.stage == "ss":
    r = student.resolution
    return {"x0": rng.standard_normal((1, b, r, r, r, student.in_channels)).astype(np.float32), "cond": cond}
  coords = np.load(TRELLIS2_DIR / "shape_flow.io.npz")["coords"]
  n, out = len(coords), student.out_channels
  feats = lambda c: rng.standard_normal((1, 1, n, c)).astype(np.float32)
  batch = {"x0": SparseShards(coords=coords[None, None], feats=feats(out), mask=np.ones((1, 1, n), bool),
                              batch_size=b), "cond": cond}
  if student.in_channels > out:
    batch["concat_cond"] = feats(student.in_channels - out)
  return batch


def test_trellis2_shape_variant_is_the_texture_variant_without_concat_cond():
  """The shape stage is the texture stage's network without ``concat_cond`` (its input channels)."""
  shape, tex = (distill_configs.get_config(f"trellis2_{s}_tiny") for s in ("shape", "tex"))
  assert shape.stage == tex.stage == "slat" and shape.model.name == tex.model.name == "ElasticSLatFlowModel"
  assert {k: v for k, v in shape.model.args.items() if k != "in_channels"} == \
      {k: v for k, v in tex.model.args.items() if k != "in_channels"}
  student, _, teacher, _ = models.student_and_teacher(shape)
  assert registry.family_of(student) == "trellis2" and student == teacher
  assert student.in_channels == student.out_channels   # no concat_cond
  assert (shape.cfg_teacher_vm, tex.cfg_teacher_vm) == (7.5, 1.0)


@pytest.mark.parametrize("variant", ["trellis2_ss_tiny", "trellis2_shape_tiny", "trellis2_tex_tiny"])
def test_trellis2_stage_distils_a_few_steps(variant):
  config = distill_configs.get_config(variant)
  student, params, teacher, teacher_params = models.student_and_teacher(config)
  assert registry.family_of(student) == "trellis2" and config.guidance_convention == "trellis2"
  optimizer = make_optimizer(config, params)
  state = init_state(params, optimizer, config.ema_rates, config.seed)
  step = jax.jit(make_train_step(config, optimizer, student_apply=registry.velocity(student),
                                 teacher_apply=registry.velocity(teacher), sparse=stages.get(config.stage).sparse))
  batch = _batch(config, student)
  frozen = {"teacher": teacher_params, "image_encoder": {}}
  for _ in range(config.total_steps):
    state, metrics = step(state, frozen, batch)
    assert np.isfinite(metrics["loss"]) and metrics["loss_vm"] > 0 and metrics["loss_vd"] > 0
  assert int(state.step) == config.total_steps and int(state.skipped) == 0
  moved = jax.tree.map(lambda a, b: float(np.max(np.abs(np.asarray(a) - np.asarray(b)))), state.params, teacher_params)
  assert max(jax.tree.leaves(moved)) > 0


def test_trellis2_guidance_convention_in_the_targets_is_g_equals_one_plus_w():
  """The objective's teacher guidance follows ``guidance_convention`` (a linear toy velocity)."""
  rng = np.random.default_rng(1)
  x0 = rng.standard_normal((2, 4, 4, 4, 3)).astype(np.float32)
  batch = {"x0": x0, "cond": rng.standard_normal((2, 5, 3)).astype(np.float32)}
  apply = lambda params, x, t, cond: params * x + cond.mean(1)[:, None, None, None, :] + t[:, None, None, None, None]
  config = distill_configs.get_config("trellis2_ss_tiny")
  loss = lambda **fields: float(distill.objective(np.float32(0.5), np.float32(0.7), batch, jax.random.key(1),
                                                  student_apply=apply, teacher_apply=apply,
                                                  config=distill.ObjectiveSpec.of({**config, **fields}))[0])
  g = loss()
  np.testing.assert_allclose(g, loss(guidance_convention="trellis", cfg_teacher_vm=6.5, cfg_teacher_vd=6.5), rtol=1e-6)
  assert abs(g - loss(cfg_teacher_vm=1.0, cfg_teacher_vd=1.0)) > 1e-3 * abs(g)
