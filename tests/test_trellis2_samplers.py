"""TRELLIS.2's guided Euler sampler inside the one sampler: parity with every sampler case of the
TRELLIS.2 fixture directory (dense and sparse, CFG, guidance interval, CFG-rescale, ``rescale_t``,
``concat_cond``), the mapping between the two guidance conventions, one model call where a
coefficient is zero, and the two std definitions of the rescale."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close, channels_last
from conversion.trellis import load_checkpoint
from fixture_scan import TRELLIS2_DIR, cases_of
from mdt_jax import flow, latents
from mdt_jax.models import registry
from mdt_jax.sparse import SparseTensor

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)


def settings_of(meta):
  """A TRELLIS.2 sampler's ``meta_json.params`` -> ``flow.sample``'s keyword arguments."""
  params = meta["params"]
  return dict(steps=int(params["steps"]), rescale_t=float(params["rescale_t"]),
              cfg_strength=float(params.get("guidance_strength", 1.0)),
              cfg_interval=tuple(params.get("guidance_interval") or (0.0, 1.0)), convention="trellis2",
              guidance_rescale=float(params.get("guidance_rescale", 0.0)), sigma_min=float(meta["sigma_min"]))


@pytest.mark.parametrize("case", cases_of("sampler", TRELLIS2_DIR), ids=str)
def test_trellis2_sampler_matches_reference(case):
  z = np.load(case.io)
  meta = json.loads(str(z["meta_json"]))
  model, params = load_checkpoint(case.stem.with_name(meta["model_ckpt"]))
  settings = settings_of(meta)
  np.testing.assert_allclose(flow.time_grid(settings["steps"], settings["rescale_t"]), z["t_seq"], rtol=1e-15, atol=0)
  run = flow.jit_sample(registry.velocity(model))
  neg = z["neg_cond"] if "neg_cond" in z.files else None
  if "coords" in z.files:
    concat = SparseTensor.from_packed(z["coords"], z["concat_feats"]) if "concat_feats" in z.files else None
    x0, trajectory = run(params, SparseTensor.from_packed(z["coords"], z["noise"]), z["cond"], neg, concat,
                         return_trajectory=True, **settings)
    trajectory = np.stack([s.to_packed()[1] for s in trajectory])
    x0, reference, samples = x0.to_packed()[1], z["pred_x_t"], z["samples"]
  else:
    x0, trajectory = run(params, channels_last(z["noise"]), z["cond"], neg, return_trajectory=True, **settings)
    reference, samples = np.moveaxis(z["pred_x_t"], 2, -1), channels_last(z["samples"])
  assert trajectory.shape == reference.shape
  for i in range(settings["steps"]):
    assert_close(trajectory[i], reference[i], atol=1e-4, rtol=0, relative_to_max=True,
                 what=f"{case.name} pred_x_t[{i}]")
  assert_close(x0, samples, atol=1e-4, rtol=0, relative_to_max=True, what=f"{case.name} samples")


def _toy(x, t, cond):
  """A velocity with a per-sample condition and time (dense [B, R, C] latents)."""
  return jnp.tanh(x * 1.5 + cond.mean(axis=1)[:, None, :] + t[:, None, None])


def _inputs():
  rng = np.random.default_rng(0)
  return (rng.standard_normal((2, 5, 3)).astype(np.float32), rng.standard_normal((2, 4, 3)).astype(np.float32),
          rng.standard_normal((2, 4, 3)).astype(np.float32))


def test_trellis2_guidance_g_is_trellis_one_plus_w():
  noise, cond, neg = _inputs()
  common = dict(steps=4, rescale_t=3.0, cond=cond, neg_cond=neg, cfg_interval=(0.5, 1.0), return_trajectory=False)
  v1, _ = flow.sample(_toy, noise, cfg_strength=2.5, **common)
  v2, _ = flow.sample(_toy, noise, cfg_strength=3.5, convention="trellis2", **common)
  np.testing.assert_allclose(v1, v2, atol=1e-6)
  plain, _ = flow.sample(_toy, noise, steps=4, rescale_t=3.0, cond=cond, return_trajectory=False)
  unguided, _ = flow.sample(_toy, noise, cfg_strength=1.0, convention="trellis2", **common)
  np.testing.assert_array_equal(unguided, plain)
  default, _ = flow.sample(_toy, noise, convention="trellis2", **common)   # no weight: no guidance
  np.testing.assert_array_equal(default, plain)
  with pytest.raises(ValueError, match="convention"):
    flow.sample(_toy, noise, cfg_strength=2.0, convention="trellis3", **common)


@pytest.mark.parametrize("g, batch", [(1.0, 2), (0.0, 2), (3.0, 4)])
def test_trellis2_one_model_call_where_a_coefficient_is_zero(g, batch):
  noise, cond, neg = _inputs()
  seen = []

  def velocity(x, t, c):
    seen.append((x.shape[0], c))
    return _toy(x, t, c)

  flow.sample(velocity, noise, steps=2, cond=cond, neg_cond=neg, cfg_strength=g, convention="trellis2")
  assert [b for b, _ in seen] == [batch]
  if g == 0.0:   # the negative branch alone (a constant of the trace)
    np.testing.assert_array_equal(np.asarray(seen[0][1]), neg)


def test_trellis2_rescale_std_is_unbiased_on_dense_and_population_on_sparse():
  rng = np.random.default_rng(2)
  values = rng.standard_normal((2, 6, 3)).astype(np.float32)
  np.testing.assert_allclose(latents.sample_std(jnp.asarray(values)), values.reshape(2, -1).std(1, ddof=1), rtol=1e-5)
  coords = np.stack([np.repeat([0, 1], 6), np.tile(np.arange(6), 2), np.zeros(12), np.zeros(12)], 1)
  sparse = SparseTensor.from_packed(coords, values.reshape(12, 3), capacity=16)
  np.testing.assert_allclose(latents.sample_std(sparse), values.reshape(2, -1).std(1, ddof=0), rtol=1e-5)
