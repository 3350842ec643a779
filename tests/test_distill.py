"""MDT-dist objectives: parity with the reference's targets, losses and gradients, and the maths."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import assert_close, channels_last
from conversion import trellis
from fixture_scan import TRELLIS_DIR, cases_of
from mdt_jax.distill import Branch, loss_and_grad_fn, objective, objective_config, predictions_and_targets, timesteps
from mdt_jax.distill.objective import make_draws
from mdt_jax.sparse import SparseTensor

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)


@functools.lru_cache(maxsize=None)
def _model(name):
  model, params = trellis.load_checkpoint(TRELLIS_DIR / name)
  return model, params


def _apply(model):
  return lambda p, x, t, c: model.apply({"params": p}, x, t, c)


def _meta(case):
  return json.loads(str(np.load(case.io)["meta_json"]))


def _trainer_config(trainer, **overrides):
  return objective_config(
      distill_type=trainer["distill_type"], distill_interval=trainer["interval"], d_norm=trainer["d_norm"],
      cfg_teacher_vm=trainer["cfg_teacher_vm"], cfg_teacher_vd=trainer["cfg_teacher_vd"],
      lambda_vm=trainer["lambda_vm"], lambda_vd=trainer["lambda_vd"], multiphase=trainer["multiphase"],
      rescale_t=trainer["rescale_t"], sigma_min=trainer["sigma_min"],
      t_schedule=dict(name=trainer["t_schedule"]["name"], **trainer["t_schedule"]["args"]), **overrides)


# ----------------------------------------------------------------------------------------------
# Prediction / target pairs: keys <type>[_no_dnorm]/cfg<c>/{v_pred,v_tgt}.

def _pred_tgt_entries():
  entries = []
  for case in cases_of("mdt_v_pred_tgt"):
    for key in np.load(case.io).files:
      if key.endswith("/v_pred"):
        entries.append((case, key.removesuffix("/v_pred")))
  return entries


@functools.lru_cache(maxsize=None)
def _targets_fn(student_name, teacher_name, kind, d_norm, interval, sigma_min, multiphase):
  """One compiled (prediction, target) function per static setting; the guidance w is traced."""
  student, teacher = _model(student_name)[0], _model(teacher_name)[0]
  return jax.jit(lambda sp, tp, branch: predictions_and_targets(
      _apply(student), sp, _apply(teacher), tp, [branch], kind=kind, interval=interval, sigma_min=sigma_min,
      d_norm=d_norm, multiphase=multiphase)[0])


@pytest.mark.parametrize("case, entry", _pred_tgt_entries(), ids=lambda v: getattr(v, "name", v))
def test_prediction_and_target_match_reference(case, entry):
  z, meta = np.load(case.io), _meta(case)
  kind_key, cfg_key = entry.split("/")
  kind, d_norm = kind_key.removesuffix("_no_dnorm"), not kind_key.endswith("_no_dnorm")
  w = float(cfg_key.removeprefix("cfg"))
  student, s_params = _model(meta["student_ckpt"])
  teacher, t_params = _model(meta["teacher_ckpt"])
  trainer = meta["trainer"]
  branch = Branch(channels_last(z["x_0"]), channels_last(z["noise"]), jnp.asarray(z["t"]), z["cond"],
                  z["neg_cond"], jnp.float32(w))
  pred, target = _targets_fn(meta["student_ckpt"], meta["teacher_ckpt"], kind, d_norm, trainer["interval"],
                             trainer["sigma_min"], trainer["multiphase"])(s_params, t_params, branch)
  ref_pred, ref_tgt = channels_last(z[f"{entry}/v_pred"]), channels_last(z[f"{entry}/v_tgt"])
  relative = w >= 40 or not d_norm
  # The target holds v_T = (1+w) v_cond - w v_neg: an error e in the teacher's outputs (torch's own
  # thread-count noise is 5e-6) becomes (1+2w) e, so its elementwise tolerance scales the same way.
  amplified = 1e-5 * (1 + 2 * w) if kind != "cm" and not relative else 1e-5
  assert_close(pred, ref_pred, relative_to_max=relative, what=f"{entry} v_pred")
  assert_close(target, ref_tgt, atol=amplified, rtol=amplified, relative_to_max=relative, what=f"{entry} v_tgt")
  if kind != "cm":  # t * dv = v_T - v_tgt on its own, so that a large v_T cannot hide a wrong dv
    x_t, t = channels_last(z["x_t"]), jnp.asarray(z["t"])
    ours = [teacher.apply({"params": t_params}, x_t, t, c) for c in (z["cond"], z["neg_cond"])]
    v_t = (1 + w) * ours[0] - w * ours[1]
    ref_v_t = (1 + w) * channels_last(z["teacher_v_cond"]) - w * channels_last(z["teacher_v_neg"])
    # Both sides are differences of float32 numbers of size max|v_T| (143 at cfg 40): their
    # rounding floor, a few float32 ulps of max|v_T|, is added to the README's atol 1e-5.
    floor = 4 * np.finfo(np.float32).eps * float(np.max(np.abs(ref_v_t)))
    assert_close(v_t - np.asarray(target), ref_v_t - ref_tgt, atol=1e-5 + floor, rtol=1e-5,
                 relative_to_max=not d_norm, what=f"{entry} v_T - v_tgt")


# ----------------------------------------------------------------------------------------------
# Full VM + VD losses and gradients with the reference's fixed draws.

@pytest.mark.parametrize("case", cases_of("mdt_loss"), ids=str)
def test_loss_and_gradients_match_reference(case):
  z, meta = np.load(case.io), _meta(case)
  student, s_params = _model(meta["student_ckpt"])
  teacher, t_params = _model(meta["teacher_ckpt"])
  config = _trainer_config(meta["trainer"], objective="vm_vd")
  draws = {name: (channels_last(z[f"draw_{name}"]) if z[f"draw_{name}"].ndim > 1 else z[f"draw_{name}"])
           for name in meta["draw_order"]}
  batch = {"x0": channels_last(z["x_0"]), "cond": z["cond"], "neg_cond": z["neg_cond"]}
  step = loss_and_grad_fn(student_apply=_apply(student), teacher_apply=_apply(teacher), config=config)
  (loss, metrics), grads = step(s_params, t_params, batch, jax.random.key(0), draws=draws)
  for name in ("loss", "loss_vm", "loss_vd"):
    assert_close(metrics[name], z[name], atol=1e-5, rtol=1e-5, relative_to_max=True, what=name)
  assert_close(loss, z["loss"], atol=1e-5, rtol=1e-5, relative_to_max=True, what="loss")

  x_fake = np.asarray(draws["noise_fake"]) - np.asarray(
      student.apply({"params": s_params}, draws["noise_fake"], jnp.ones(2), z["cond"]))
  assert_close(x_fake, channels_last(z["vd_x_fake"]), what="vd_x_fake")

  reference = load_file(TRELLIS_DIR / meta["grads_file"])
  ours = trellis.params_to_state_dict(student, grads)
  assert set(reference) == set(ours) - {"pos_emb"}  # pos_emb is a buffer: no gradient
  scale = max(float(np.max(np.abs(g))) for g in reference.values())
  for key, g in reference.items():
    assert_close(ours[key], g, atol=1e-5 * scale, rtol=1e-5, what=f"grad {key}")


# ----------------------------------------------------------------------------------------------
# Maths, on the tiny checkpoints.

def _tiny_batch(seed=0):
  rng = np.random.default_rng(seed)
  model, _ = _model("ss_flow")
  x0 = rng.standard_normal((2, *model.example_inputs()[0].shape[1:]), np.float32)
  return x0, rng.standard_normal((2, 7, model.cond_channels), np.float32)


def test_discrete_target_tends_to_continuous_as_interval_shrinks():
  student, s_params = _model("mdt_student")
  teacher, t_params = _model("ss_flow")
  x0, cond = _tiny_batch()
  noise = np.random.default_rng(1).standard_normal(x0.shape).astype(np.float32)
  branch = Branch(x0, noise, jnp.asarray([0.4, 0.8]), cond, np.zeros_like(cond), 1.0)

  @functools.partial(jax.jit, static_argnames=("kind", "interval"))
  def target(kind, interval):
    return predictions_and_targets(_apply(student), s_params, _apply(teacher), t_params, [branch], kind=kind,
                                   interval=interval, sigma_min=1e-5, d_norm=False)[0][1]
  continuous = np.asarray(target("continuous", 0.01))
  # The random tiny nets oscillate in t with period ~2 pi / 1000 (the 1000 t embedding): D must be
  # well below that for the finite difference to approach the derivative.
  errors = [np.max(np.abs(np.asarray(target("discrete", d)) - continuous)) for d in (1e-3, 2e-4, 4e-5)]
  # First-order convergence: the error shrinks like D (a factor 5 per step here).
  ratios = [errors[0] / errors[1], errors[1] / errors[2]]
  assert all(3.5 < r < 6.5 for r in ratios), (errors, ratios)
  assert errors[2] < 0.02 * np.max(np.abs(continuous))


def test_vd_gradient_is_the_analytic_form():
  """d loss_VD / d theta = 2 lambda_VD (v_pred - v_tgt) du_fake/d theta / numel."""
  student, s_params = _model("mdt_student")
  teacher, t_params = _model("ss_flow")
  x0, cond = _tiny_batch(2)
  config = objective_config(objective="vd", lambda_vd=0.5, cfg_teacher_vd=2.0)
  batch = {"x0": x0, "cond": cond}
  rng = jax.random.key(3)
  loss_fn = functools.partial(objective, student_apply=_apply(student), teacher_apply=_apply(teacher), config=config)
  grads = jax.jit(jax.grad(lambda p: loss_fn(p, t_params, batch, rng)[0]))(s_params)

  @jax.jit
  def analytic_grads(sp, tp):
    draws = make_draws(jax.random.split(rng, 4)[0], x0, config)
    t = timesteps.training_time(draws["t_z"], config)
    u_fake, vjp = jax.vjp(lambda p: student.apply({"params": p}, draws["noise_fake"], jnp.ones(2), cond), sp)
    v_pred, v_tgt = predictions_and_targets(
        _apply(student), sp, _apply(teacher), tp,
        [Branch(draws["noise_fake"] - u_fake, draws["noise"], t, cond, jnp.zeros_like(cond), 2.0)],
        kind="discrete", interval=0.01, sigma_min=1e-5, d_norm=True)[0]
    return vjp(2 * 0.5 * (v_pred - v_tgt) / v_pred.size)[0]
  analytic = analytic_grads(s_params, t_params)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(analytic)):
    assert_close(a, b, atol=1e-5 * float(np.max(np.abs(b))) + 1e-12, rtol=1e-4)


def _gaussian_fields(mu, s, sigma_min):
  """Exact velocity v and transport u of the rectified flow of N(mu, s^2 I) data (per element).

  With a = 1 - t, b = sigma_min + (1 - sigma_min) t: v(x, t) = -mu + (c b - a s^2)/(a^2 s^2 + b^2) (x - a mu),
  c = 1 - sigma_min; the flow keeps z = (x - a mu)/sqrt(a^2 s^2 + b^2) constant, so it lands on
  Phi(x) = mu + sqrt(s^2 + sigma_min^2) z and u(x, t) = (x - Phi(x)) / t.
  """
  def coeffs(t):
    t = t.reshape((-1, 1, 1, 1, 1))
    return 1 - t, sigma_min + (1 - sigma_min) * t, t

  def v(params, x, t, cond):
    a, b, _ = coeffs(t)
    return -mu + ((1 - sigma_min) * b - a * s ** 2) / (a ** 2 * s ** 2 + b ** 2) * (x - a * mu)

  def u(params, x, t, cond):
    a, b, tt = coeffs(t)
    landing = mu + jnp.sqrt(s ** 2 + sigma_min ** 2) * (x - a * mu) / jnp.sqrt(a ** 2 * s ** 2 + b ** 2)
    return params["gain"] * (x - landing) / tt
  return v, u


@pytest.mark.parametrize("distill_type", ["continuous", "discrete"])
def test_exact_transport_of_a_gaussian_teacher_has_zero_vm_loss(distill_type):
  mu, s = 0.7, 0.5
  v, u = _gaussian_fields(mu, s, 1e-5)
  x0 = mu + s * np.random.default_rng(0).standard_normal((16, 2, 2, 2, 4)).astype(np.float32)
  batch = {"x0": x0, "cond": np.zeros((16, 1, 1), np.float32)}
  config = objective_config(objective="vm", distill_type=distill_type, d_norm=False, cfg_teacher_vm=0.0,
                            distill_interval=1e-3)
  loss = jax.jit(lambda gain: objective({"gain": gain}, {}, batch, jax.random.key(0), student_apply=u,
                                        teacher_apply=v, config=config)[0])
  exact, wrong = float(loss(1.0)), float(loss(1.1))
  assert exact < (1e-6 if distill_type == "continuous" else 1e-4) * wrong, (exact, wrong)


def _as_sparse(x):
  """Dense [B, R, R, R, C] -> SparseTensor of every voxel, with extra padding rows."""
  b, r = x.shape[0], x.shape[1]
  grid = np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
  coords = np.concatenate([np.concatenate([np.full((len(grid), 1), i), grid], 1) for i in range(b)])
  return SparseTensor.from_packed(coords, np.asarray(x).reshape(-1, x.shape[-1]), capacity=b * r ** 3 + 40)


def _densify(x: SparseTensor, r):
  c = x.coords
  grid = jnp.zeros((x.batch_size, r, r, r, x.feats.shape[-1]), x.feats.dtype)
  batch = jnp.where(x.mask, c[:, 0], x.batch_size)  # padding rows fall outside and are dropped
  return grid.at[batch, c[:, 1], c[:, 2], c[:, 3]].set(x.feats, mode="drop")


def _sparse_apply(model):
  """The dense model fed a SparseTensor: densify, run, gather back at the rows."""
  def apply(params, x, t, cond):
    r = model.resolution
    out = model.apply({"params": params}, _densify(x, r), t, cond)
    c = x.coords
    return x.replace_feats(out[jnp.where(x.mask, c[:, 0], 0), c[:, 1], c[:, 2], c[:, 3]] * x.mask[:, None])
  return apply


@pytest.mark.parametrize("objective_name, distill_type", [("vm_vd", "discrete"), ("vm_vd", "continuous"),
                                                          ("cm", "discrete"), ("fm", "discrete")])
def test_sparse_objective_equals_dense_on_full_grids(objective_name, distill_type):
  student, s_params = _model("mdt_student")
  teacher, t_params = _model("ss_flow")
  x0, cond = _tiny_batch(4)
  config = objective_config(objective=objective_name, distill_type=distill_type, cfg_teacher_vm=2.0,
                            cfg_teacher_vd=3.0)
  rng = jax.random.key(5)
  dense_draws = make_draws(jax.random.split(rng, 4)[0], x0, config)
  sparse_draws = {k: (_as_sparse(v) if np.ndim(v) > 1 else v) for k, v in dense_draws.items()}
  run = lambda apply: jax.jit(lambda sp, tp, batch, draws: objective(
      sp, tp, batch, rng, student_apply=apply(student), teacher_apply=apply(teacher), config=config, draws=draws))
  dense = run(_apply)(s_params, t_params, {"x0": x0, "cond": cond}, dense_draws)
  sparse = run(_sparse_apply)(s_params, t_params, {"x0": _as_sparse(x0), "cond": cond}, sparse_draws)
  for name in dense[1]:
    assert_close(sparse[1][name], dense[1][name], atol=1e-5, rtol=1e-4, relative_to_max=True, what=name)
