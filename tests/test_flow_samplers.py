"""Euler samplers: parity with every upstream sampler case, convergence on an analytic flow, one
compilation per step count, sparse == dense, one batched forward for guidance."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close, channels_last
from conversion.trellis import load_checkpoint
from fixture_scan import cases_of
from mdt_jax import flow, latents
from mdt_jax.flow.guidance import guided_velocity
from mdt_jax.sparse import SparseTensor

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)


@pytest.mark.parametrize("case", cases_of("sampler"), ids=str)
def test_sampler_matches_reference(case):
  z = np.load(case.io)
  meta = json.loads(str(z["meta_json"]))
  model, params = load_checkpoint(case.stem.with_name(meta["model_ckpt"]))
  settings = dict(steps=int(meta["steps"]), rescale_t=float(meta["rescale_t"]),
                  cfg_strength=float(meta["cfg_strength"]), cfg_interval=tuple(meta.get("cfg_interval", (0.0, 1.0))))
  schedule = flow.euler_schedule(settings["steps"], settings["rescale_t"], settings["cfg_interval"],
                                 settings["cfg_strength"])
  np.testing.assert_allclose(schedule.t, z["t_seq"], rtol=1e-15, atol=0)
  np.testing.assert_array_equal(schedule.guidance, z["cfg_applied"])
  run = flow.jit_sample(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
  x0, trajectory = run(params, channels_last(z["noise"]), z["cond"], z["neg_cond"], return_trajectory=True,
                       **settings)
  reference = np.moveaxis(z["pred_x_t"], 2, -1)
  assert trajectory.shape == reference.shape
  for i in range(settings["steps"]):
    assert_close(trajectory[i], reference[i], what=f"{case.name} pred_x_t[{i}]")
  np.testing.assert_array_equal(x0, trajectory[-1])
  assert_close(x0, channels_last(z["samples"]), what=f"{case.name} samples")


# ----------------------------------------------------------------------------------------------
# A toy velocity field for dense [B, R, R, R, C] latents and SparseTensors alike: per-voxel maths,
# a per-sample condition and time, and a per-sample mean that couples the voxels of one sample.

C = 4
W = np.random.default_rng(1).standard_normal((C, C)).astype(np.float32) / 2


def toy_velocity(x, t, cond):
  values = latents.feats(x)
  c = cond.mean(axis=1)  # [B, C]
  c = c[jnp.maximum(x.segment_ids, 0)] if latents.is_sparse(x) else c[:, None, None, None, :]
  mean = latents.sample_sum(x, values) / latents.valid_count(x)
  v = jnp.tanh(values @ W + c + latents.per_sample(x, t)) + 0.5 * latents.per_sample(x, mean)
  return latents.map_feats(lambda _: v, x)


def _toy_inputs(batch=2, r=3, seed=0):
  rng = np.random.default_rng(seed)
  noise = rng.standard_normal((batch, r, r, r, C)).astype(np.float32)
  cond = rng.standard_normal((batch, 5, C)).astype(np.float32)
  return noise, cond, rng.standard_normal((batch, 5, C)).astype(np.float32)


GUIDED = dict(steps=4, rescale_t=3.0, cfg_strength=2.5, cfg_interval=(0.5, 0.95))  # guidance on 2 of 4 steps


def test_guided_sampler_matches_a_host_loop_with_two_forwards():
  noise, cond, neg = _toy_inputs()
  x0, trajectory = flow.sample(toy_velocity, noise, cond=cond, neg_cond=neg, **GUIDED)
  t = flow.time_grid(4, 3.0)
  assert flow.euler_schedule(4, 3.0, (0.5, 0.95), 2.5).guidance.tolist() == [False, True, True, True]
  x = jnp.asarray(noise)
  for i in range(4):
    tb = jnp.full((2,), t[i], jnp.float32)
    v = toy_velocity(x, tb, cond)
    if 0.5 <= t[i] <= 0.95:
      v = 3.5 * v - 2.5 * toy_velocity(x, tb, neg)
    x = x - np.float32(t[i] - t[i + 1]) * v
    np.testing.assert_allclose(trajectory[i], x, atol=1e-6)
  np.testing.assert_array_equal(x0, trajectory[-1])


def test_neg_cond_defaults_to_zeros():
  noise, cond, _ = _toy_inputs()
  a, _ = flow.sample(toy_velocity, noise, cond=cond, return_trajectory=False, **GUIDED)
  b, _ = flow.sample(toy_velocity, noise, cond=cond, neg_cond=np.zeros_like(cond), return_trajectory=False, **GUIDED)
  np.testing.assert_array_equal(a, b)


def test_guidance_runs_one_forward_on_the_doubled_batch():
  batches = []

  def velocity(x, t, cond):
    batches.append((x.shape[0], t.shape[0], cond.shape[0]))
    return toy_velocity(x, t, cond)

  noise, cond, neg = _toy_inputs()
  flow.sample(velocity, noise, cond=cond, neg_cond=neg, steps=3, cfg_strength=1.0)  # guidance on every step
  assert batches == [(4, 4, 4)]


def _full_grid(noise):
  """Dense [B, R, R, R, C] -> a SparseTensor holding every voxel, row-major over (x, y, z)."""
  b, r = noise.shape[0], noise.shape[1]
  grid = np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
  coords = np.concatenate([np.repeat(np.arange(b), len(grid))[:, None], np.tile(grid, (b, 1))], 1)
  return SparseTensor.from_packed(coords, noise.reshape(-1, C), capacity=b * len(grid) + 24)


def test_sparse_sampling_equals_dense_sampling_on_a_full_grid():
  noise, cond, neg = _toy_inputs()
  dense, dense_traj = flow.sample(toy_velocity, noise, cond=cond, neg_cond=neg, **GUIDED)
  sparse, sparse_traj = flow.sample(toy_velocity, _full_grid(noise), cond=cond, neg_cond=neg, **GUIDED)
  n = noise.size // C
  assert isinstance(sparse, SparseTensor) and len(sparse_traj) == GUIDED["steps"]
  np.testing.assert_allclose(sparse.feats[:n], np.asarray(dense).reshape(-1, C), atol=1e-6)
  np.testing.assert_array_equal(sparse.feats[n:], 0)  # padding stays zero
  for s, d in zip(sparse_traj, dense_traj):
    np.testing.assert_allclose(s.feats[:n], np.asarray(d).reshape(-1, C), atol=1e-6)


def test_ragged_sparse_batch_equals_per_sample_runs():
  rng = np.random.default_rng(3)
  sizes = (7, 19)
  coords = [np.concatenate([np.full((n, 1), b), rng.permutation(64)[:n, None] // [16, 4, 1] % 4], 1)
            for b, n in enumerate(sizes)]
  feats = [rng.standard_normal((n, C)).astype(np.float32) for n in sizes]
  _, cond, neg = _toy_inputs()
  batch, _ = flow.sample(toy_velocity, SparseTensor.from_packed(np.concatenate(coords), np.concatenate(feats)),
                         cond=cond, neg_cond=neg, **GUIDED)
  _, out = batch.to_packed()
  start = 0
  for b, n in enumerate(sizes):
    alone, _ = flow.sample(toy_velocity, SparseTensor.from_packed(coords[b] * [0, 1, 1, 1], feats[b]),
                           cond=cond[b:b + 1], neg_cond=neg[b:b + 1], **GUIDED)
    np.testing.assert_allclose(out[start:start + n], alone.to_packed()[1], atol=1e-6)
    start += n


def test_one_compilation_per_step_count():
  traces = []

  def apply(params, x, t, cond):
    traces.append(1)
    return toy_velocity(x, t * params, cond)

  run = flow.jit_sample(apply)
  noise, cond, neg = _toy_inputs()
  settings = dict(rescale_t=3.0, cfg_strength=2.5, cfg_interval=(0.5, 0.95))
  for steps, params in [(1, 1.0), (2, 1.0), (25, 1.0), (2, 0.5), (25, 0.7), (1, 2.0)]:
    run(jnp.float32(params), noise + params, cond, neg, steps=steps, **settings)
  # One trace of the loop body per compilation (two where the guided and the plain branch are
  # both needed), whatever the step count: the loop is not unrolled, and repeats reuse the program.
  expected = 0
  for steps in (1, 2, 25):
    guidance = flow.euler_schedule(steps, 3.0, (0.5, 0.95), 2.5).guidance
    expected += 2 if 0 < guidance.sum() < steps else 1
  assert len(traces) == expected == 5
  assert run._cache_size() == 3


def test_euler_converges_on_gaussian_data():
  """Data N(mu, s^2): the exact flow maps noise eps to mu + s eps; Euler's error is O(1/steps)."""
  mu, s = 1.5, 0.3

  def exact_velocity(x, t, cond):
    t = t[:, None]
    var = ((1 - t) * s) ** 2 + t ** 2
    return -mu + (t - (1 - t) * s ** 2) / var * (x - (1 - t) * mu)

  eps = np.random.default_rng(0).standard_normal((256, 3)).astype(np.float32)
  errors = []
  for steps in (4, 8, 16, 32, 64):
    x0, _ = flow.sample(exact_velocity, eps, steps=steps, return_trajectory=False)
    errors.append(float(np.max(np.abs(np.asarray(x0) - (mu + s * eps)))))
  ratios = np.array(errors[:-1]) / np.array(errors[1:])
  assert np.all((ratios > 1.6) & (ratios < 2.5)), (errors, ratios)
  assert errors[-1] < 0.05


def test_guidance_batch_of_the_sparse_model_equals_two_forwards(trellis_dir):
  """The real sparse model on the doubled batch (rows regrouped, coarse capacities doubled) gives
  (1 + w) v(cond) - w v(neg_cond) of two separate forwards."""
  model, params = load_checkpoint(trellis_dir / "slat_flow")
  z = np.load(trellis_dir / "slat_flow.io.npz")
  x = SparseTensor.from_packed(z["coords"], z["feats"], coarse_levels=1)
  t, cond = jnp.asarray(z["t"] / 1000.0, jnp.float32), jnp.asarray(z["cond"])
  neg = jnp.asarray(np.random.default_rng(0).standard_normal(cond.shape), jnp.float32)
  velocity = jax.jit(lambda x, t, c: model.apply({"params": params}, x, t, c))
  guided = guided_velocity(velocity, cond, neg, 3.0)(x, t)  # one forward on the batch of 4
  separate = 4.0 * velocity(x, t, cond).feats - 3.0 * velocity(x, t, neg).feats
  assert np.all(np.isfinite(guided))
  np.testing.assert_allclose(guided, separate, atol=1e-5)
