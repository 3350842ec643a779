"""Rectified-flow identities and the host-side time grids (mdt_jax.flow.paths / schedules)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mdt_jax import flow, latents
from mdt_jax.sparse import SparseTensor

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)

SIGMA = 1e-5


def _latents(sparse):
  rng = np.random.default_rng(0)
  if not sparse:
    return [jnp.asarray(rng.standard_normal((2, 3, 3, 3, 4), np.float32)) for _ in range(2)]
  coords = np.array([[0, 0, 0, 0], [0, 1, 0, 0], [0, 2, 1, 0], [1, 0, 0, 1], [1, 3, 2, 1]], np.int32)
  return [SparseTensor.from_packed(coords, rng.standard_normal((5, 4)).astype(np.float32)) for _ in range(2)]


def _values(x):
  return np.asarray(x.feats)[np.asarray(x.mask)] if isinstance(x, SparseTensor) else np.asarray(x)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
def test_path_identities(sparse):
  x0, eps = _latents(sparse)
  t = jnp.asarray([0.3, 0.85], jnp.float32)
  x_t = flow.diffuse(x0, eps, t, SIGMA)
  v = flow.velocity_target(x0, eps, SIGMA)
  close = lambda a, b: np.testing.assert_allclose(_values(a), _values(b), atol=2e-6)
  close(flow.x0_from_v(x_t, v, t, SIGMA), x0)
  close(flow.eps_from_v(x_t, v, t), eps)
  close(flow.v_from_x0(x_t, x0, t, SIGMA), v)
  close(flow.v_from_eps(x_t, eps, t, SIGMA), v)
  # v is the time derivative of x_t (scalar t: same for every sample).
  dx = jax.jvp(lambda s: latents.feats(flow.diffuse(x0, eps, s, SIGMA)), (jnp.float32(0.4),), (jnp.float32(1.0),))[1]
  np.testing.assert_allclose(dx, latents.feats(v), atol=2e-6)
  # Endpoints: the data at t = 0 (up to sigma_min eps), pure noise at t = 1.
  close(flow.diffuse(x0, eps, 0.0, 0.0), x0)
  close(flow.diffuse(x0, eps, 1.0, SIGMA), eps)


def test_time_grid_is_trellis_rescaled_linspace():
  np.testing.assert_allclose(flow.time_grid(5, 3.0), [1, 12 / 13, 9 / 11, 2 / 3, 3 / 7, 0], rtol=1e-15)
  np.testing.assert_array_equal(flow.time_grid(4), [1, 0.75, 0.5, 0.25, 0])
  assert flow.time_grid(1, 3.0).tolist() == [1.0, 0.0]
  with pytest.raises(ValueError, match="steps must be >= 1"):
    flow.time_grid(0)


def test_guidance_interval_is_inclusive_in_flow_time():
  s = flow.euler_schedule(4, 1.0, cfg_interval=(0.5, 0.75), cfg_strength=3.0)
  assert s.guidance.tolist() == [False, True, True, False]
  assert not flow.euler_schedule(4, 1.0, cfg_strength=0.0).guidance.any()
  assert s.dt.dtype == np.float32 and s.dt.tolist() == [0.25] * 4


def test_model_time_reproduces_upstreams_float32_model_input():
  t = flow.time_grid(50, 3.0)[:-1]
  ours = np.float32(1000.0) * flow.model_time(t)
  upstream = (1000.0 * t).astype(np.float32)
  naive = np.float32(1000.0) * t.astype(np.float32)
  assert np.sum(naive != upstream) > 0  # the nearest float32 alone is not enough here
  np.testing.assert_array_equal(ours, upstream)
  assert np.max(np.abs(flow.model_time(t) - t)) < 3e-7
