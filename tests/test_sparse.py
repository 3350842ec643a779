"""Sparse ops and the SLat flow model against plain dense computations; permutation, padding,
gradient and memory properties.

Ops run at tiny sizes; the model tests share the SLat fixture checkpoint and one compiled forward.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_close, random_zero_inits
from conversion.trellis import load_checkpoint
from fixture_scan import TRELLIS_DIR
from mdt_jax.models.slat_flow import ElasticSLatFlowModel, SLatFlowModel
from mdt_jax.models.transformer import ModulatedTransformerCrossBlock
from mdt_jax.sparse import SparseTensor, bucket_capacity, coarse_capacities
from mdt_jax.sparse.conv import sparse_conv3d
from mdt_jax.sparse.neighbours import OFFSETS, neighbour_table
from mdt_jax.sparse.resample import downsampling

pytestmark = pytest.mark.parity  # full float32 matmuls off CPU (conftest.py)


def random_sites(rng, counts, resolution, clustered=True):
  """Packed coords [N, 4] int32 (b, x, y, z), unique per sample, each sample sorted; clustered
  sites share many 2x parents and many neighbours."""
  rows = []
  for b, n in enumerate(counts):
    if clustered:  # a random blob: sites drawn from a small sub-box
      side = max(2, int(round(2 * n ** (1 / 3))))
      lo = rng.integers(0, resolution - min(side, resolution) + 1, 3)
      flat = rng.choice(min(side, resolution) ** 3, n, replace=False)
      xyz = np.stack(np.unravel_index(flat, (min(side, resolution),) * 3), -1) + lo
    else:
      xyz = np.stack(np.unravel_index(rng.choice(resolution ** 3, n, replace=False), (resolution,) * 3), -1)
    xyz = xyz[np.lexsort(xyz.T[::-1])]
    rows.append(np.concatenate([np.full((n, 1), b), xyz], 1))
  return np.concatenate(rows).astype(np.int32)


def interleave_padding(coords, feats, pad_after, capacity=None):
  """A SparseTensor with ``pad_after[b]`` padding rows after sample b (as ``latents.concat`` makes)."""
  c_rows, f_rows, m_rows = [], [], []
  for b, pad in enumerate(pad_after):
    sel = coords[:, 0] == b
    c_rows += [coords[sel], np.zeros((pad, 4), np.int32)]
    f_rows += [feats[sel], np.zeros((pad, feats.shape[1]), feats.dtype)]
    m_rows += [np.ones(sel.sum(), bool), np.zeros(pad, bool)]
  coords, feats, mask = (np.concatenate(r) for r in (c_rows, f_rows, m_rows))
  return SparseTensor(coords=jnp.asarray(coords), feats=jnp.asarray(feats), mask=jnp.asarray(mask),
                      batch_size=len(pad_after))


def dense_conv_at_sites(coords, feats, kernel, bias, resolution, batch_size):
  """Reference: dense 3x3x3 cross-correlation (zero padding 1) of the densified grid, at the sites."""
  grid = np.zeros((batch_size, resolution + 2, resolution + 2, resolution + 2, feats.shape[1]))
  grid[coords[:, 0], coords[:, 1] + 1, coords[:, 2] + 1, coords[:, 3] + 1] = feats
  out = np.zeros((batch_size, resolution, resolution, resolution, kernel.shape[-1])) + bias
  r = resolution
  for a in range(3):
    for b in range(3):
      for c in range(3):
        out += grid[:, a:a + r, b:b + r, c:c + r] @ kernel[a, b, c]
  return out[coords[:, 0], coords[:, 1], coords[:, 2], coords[:, 3]]


def assert_gradient_matches_finite_difference(loss, args, seed, eps=1e-2, rtol=1e-2):
  """Reverse-mode gradient of the jitted scalar ``loss(*args)`` vs a central difference along one
  random direction (float32: eps 1e-2, rtol 1e-2); returns the gradients."""
  grads = jax.jit(jax.grad(loss, argnums=tuple(range(len(args)))))(*args)
  rng = np.random.default_rng(seed)
  direction = [rng.standard_normal(np.shape(a)).astype(np.float32) for a in args]
  plus = loss(*[a + eps * d for a, d in zip(args, direction)])
  minus = loss(*[a - eps * d for a, d in zip(args, direction)])
  numeric = (float(plus) - float(minus)) / (2 * eps)
  analytic = sum(float(np.sum(np.asarray(g, np.float64) * d)) for g, d in zip(grads, direction))
  assert abs(numeric - analytic) <= rtol * max(abs(analytic), 1e-3), (numeric, analytic)
  return grads


# ----------------------------------------------------------------------------------------------
# Ops


def test_neighbour_table_finds_exactly_the_active_neighbours():
  rng = np.random.default_rng(0)
  coords = random_sites(rng, [30, 45], 5)
  x = interleave_padding(coords, np.zeros((len(coords), 1), np.float32), [3, 7])
  table = np.asarray(jax.jit(neighbour_table, static_argnames=("resolution", "batch_size"))(
      x.coords, x.mask, resolution=5, batch_size=2))
  rows = {tuple(c): i for i, (c, m) in enumerate(zip(np.asarray(x.coords), np.asarray(x.mask))) if m}
  for i, (c, m) in enumerate(zip(np.asarray(x.coords), np.asarray(x.mask))):
    expected = [rows.get((c[0], *(c[1:] + o)), x.capacity) if m else x.capacity for o in OFFSETS]
    np.testing.assert_array_equal(table[i], expected, err_msg=f"row {i} {c}")


@pytest.mark.parametrize("implementation", ["scan", "gathered"])
def test_sparse_conv_equals_dense_conv_at_active_sites(implementation):
  rng = np.random.default_rng(1)
  r, c_in, c_out = 6, 3, 4
  coords = random_sites(rng, [40, 25], r)
  feats = rng.standard_normal((len(coords), c_in)).astype(np.float32)
  kernel = rng.standard_normal((3, 3, 3, c_in, c_out)).astype(np.float32)
  bias = rng.standard_normal(c_out).astype(np.float32)
  x = interleave_padding(coords, feats, [5, 2])
  conv = jax.jit(lambda x: sparse_conv3d(x.feats, neighbour_table(x.coords, x.mask, resolution=r, batch_size=2),
                                         kernel, bias, implementation=implementation))
  got = np.asarray(conv(x))[np.asarray(x.mask)]
  assert_close(got, dense_conv_at_sites(coords, feats, kernel, bias, r, 2), atol=1e-5, rtol=1e-5, what="conv")


def test_downsample_and_upsample_equal_numpy():
  rng = np.random.default_rng(2)
  r = 8
  coords = random_sites(rng, [50, 30], r)
  feats = rng.standard_normal((len(coords), 3)).astype(np.float32)
  x = interleave_padding(coords, feats, [4, 6])

  @jax.jit
  def down_up(x):
    ds = downsampling(x.coords, x.mask, resolution=r, batch_size=2, capacity=bucket_capacity(len(coords)))
    coarse = ds.pool(x)
    return ds, coarse, ds.unpool(coarse.replace_feats(coarse.feats * 2))

  ds, coarse, fine = down_up(x)

  parents = np.concatenate([coords[:, :1], coords[:, 1:] // 2], 1)
  unique, inverse = np.unique(parents, axis=0, return_inverse=True)  # lexicographic (b, x, y, z)
  sums = np.zeros((len(unique), 3))
  np.add.at(sums, inverse, feats)
  counts = np.bincount(inverse, minlength=len(unique))
  n = len(unique)
  assert not bool(ds.overflow) and int(np.sum(ds.coarse_mask)) == n
  np.testing.assert_array_equal(np.asarray(coarse.coords)[:n], unique)
  assert_close(np.asarray(coarse.feats)[:n], sums / (counts + 1)[:, None], what="parent values")
  assert not np.any(np.asarray(coarse.mask)[n:]) and not np.any(np.asarray(coarse.feats)[n:])
  assert not np.any(np.asarray(coarse.coords)[n:])

  np.testing.assert_array_equal(fine.coords, x.coords)
  np.testing.assert_array_equal(fine.mask, x.mask)
  expected = np.zeros_like(np.asarray(x.feats))
  expected[np.asarray(x.mask)] = 2 * sums[inverse] / (counts[inverse] + 1)[:, None]
  assert_close(fine.feats, expected, what="upsampled values in the fine rows' order")

  assert coarse_capacities(x.coords, x.mask, 2) == (bucket_capacity(n), bucket_capacity(
      len(np.unique(np.concatenate([coords[:, :1], coords[:, 1:] // 4], 1), axis=0))))
  small = jax.jit(lambda x: downsampling(x.coords, x.mask, resolution=r, batch_size=2, capacity=n - 1))(x)
  assert bool(small.overflow)


def test_masked_attention_block_equals_per_sample_dense_block():
  """Sparse layout (all samples in one row, segment ids, padding between) == each sample alone."""
  rng = np.random.default_rng(3)
  counts, c, cc, num_cond = [7, 12], 16, 8, 3
  block = ModulatedTransformerCrossBlock(c, 2, qk_rms_norm=True, qk_rms_norm_cross=True)
  tokens = rng.standard_normal((sum(counts), c)).astype(np.float32)
  emb = rng.standard_normal((2, c)).astype(np.float32)
  cond = rng.standard_normal((2, num_cond, cc)).astype(np.float32)
  coords = np.repeat(np.arange(2), counts)[:, None] * np.array([[1, 0, 0, 0]])
  x = interleave_padding(coords.astype(np.int32), tokens, [2, 3])
  params = random_zero_inits(jax.jit(block.init)(jax.random.key(0), tokens[None, :7], emb[:1], cond[:1])["params"])
  cond_ids = jnp.repeat(jnp.arange(2), num_cond)[None]

  def sparse(feats):
    return block.apply({"params": params}, feats[None], emb, cond.reshape(1, -1, cc),
                       segment_ids=x.segment_ids[None], cond_segment_ids=cond_ids)[0]

  got = np.asarray(jax.jit(sparse)(x.feats))[np.asarray(x.mask)]
  dense = jax.jit(lambda h, e, c: block.apply({"params": params}, h, e, c))
  start = 0
  for b, n in enumerate(counts):
    alone = dense(tokens[None, start:start + n], emb[b:b + 1], cond[b:b + 1])[0]
    assert_close(got[start:start + n], alone, atol=1e-5, rtol=1e-5, what=f"sample {b}")
    start += n

  # Gradients: finite differences agree, and padding rows never influence a real row.
  valid = x.mask[:, None].astype(jnp.float32)
  loss = jax.jit(lambda feats: jnp.sum(jnp.sin(sparse(feats)) * valid))
  grad = np.asarray(assert_gradient_matches_finite_difference(loss, (x.feats,), seed=0)[0])
  assert np.all(grad[~np.asarray(x.mask)] == 0) and np.any(grad[np.asarray(x.mask)] != 0)


@pytest.mark.parametrize("implementation", ["scan", "gathered"])
def test_gradients_through_sparse_conv_and_resampling(implementation):
  rng = np.random.default_rng(4)
  r = 6
  coords = random_sites(rng, [20, 14], r)
  x = interleave_padding(coords, rng.standard_normal((len(coords), 3)).astype(np.float32), [3, 2])

  @jax.jit
  def structure(x):
    ds = downsampling(x.coords, x.mask, resolution=r, batch_size=2)
    return (ds, neighbour_table(x.coords, x.mask, resolution=r, batch_size=2),
            neighbour_table(ds.coarse_coords, ds.coarse_mask, resolution=r // 2, batch_size=2))

  ds, fine_table, coarse_table = structure(x)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 3, 3, 2)).astype(np.float32) * 0.3)
  bias = jnp.asarray(rng.standard_normal(2).astype(np.float32))
  valid = x.mask[:, None].astype(jnp.float32)

  @jax.jit
  def loss(feats, kernel):
    h = sparse_conv3d(feats, fine_table, kernel, bias, implementation=implementation)
    coarse = ds.pool(x.replace_feats(h))
    h = sparse_conv3d(coarse.feats, coarse_table, kernel[..., :2, :], bias, implementation=implementation)
    return jnp.sum(jnp.tanh(ds.unpool(coarse.replace_feats(h)).feats) * valid)

  grad = np.asarray(assert_gradient_matches_finite_difference(loss, (x.feats, kernel), seed=1)[0])
  assert np.all(grad[~np.asarray(x.mask)] == 0)


# ----------------------------------------------------------------------------------------------
# The model


@pytest.fixture(scope="session")
def slat():
  """(model, params, fixture npz, jitted forward (params, x, t, cond) -> SparseTensor, reference output)."""
  model, params = load_checkpoint(TRELLIS_DIR / "slat_flow")
  z = np.load(TRELLIS_DIR / "slat_flow.io.npz")
  forward = jax.jit(lambda p, x, t, c: model.apply({"params": p}, x, t, c))
  base = forward(params, SparseTensor.from_packed(z["coords"], z["feats"]), z["t"] / 1000.0, z["cond"])
  return model, params, z, forward, base.to_packed()[1]


def test_shuffling_rows_within_a_sample_only_permutes_the_output(slat):
  model, params, z, forward, base = slat
  rng = np.random.default_rng(5)
  perm = np.concatenate([rng.permutation(np.flatnonzero(z["coords"][:, 0] == b)) for b in range(2)])
  x = SparseTensor.from_packed(z["coords"][perm], z["feats"][perm])
  coords, feats = forward(params, x, z["t"] / 1000.0, z["cond"]).to_packed()
  np.testing.assert_array_equal(coords, z["coords"][perm])
  assert_close(feats, base[perm], atol=1e-5, rtol=1e-5, what="shuffled rows")


def test_more_padding_and_a_coarse_capacity_give_the_same_result(slat):
  model, params, z, forward, base = slat
  x = interleave_padding(z["coords"], z["feats"], [37, 114])   # 256 rows, padding between samples
  x = x.replace(coarse_capacities=coarse_capacities(x.coords, x.mask, 1))
  assert x.capacity == 256 and x.coarse_capacities == (bucket_capacity(25),)
  out = forward(params, x, z["t"] / 1000.0, z["cond"])
  coords, feats = out.to_packed()
  np.testing.assert_array_equal(coords, z["coords"])
  assert_close(feats, base, atol=1e-6, rtol=1e-6, what="padded")
  assert not np.any(np.asarray(out.feats)[~np.asarray(out.mask)])


def test_a_too_small_coarse_capacity_gives_nan(slat):
  model, params, z, forward, _ = slat
  x = SparseTensor.from_packed(z["coords"], z["feats"]).replace(coarse_capacities=(16,))  # 25 parents
  assert np.all(np.isnan(np.asarray(forward(params, x, z["t"] / 1000.0, z["cond"]).feats)))


def test_elastic_model_is_the_same_network_with_correct_gradients(slat):
  model, params, z, forward, base = slat
  elastic = ElasticSLatFlowModel(**{f: getattr(model, f) for f in (
      "resolution", "in_channels", "model_channels", "cond_channels", "out_channels", "num_blocks",
      "num_heads", "patch_size", "io_block_channels", "qk_rms_norm", "use_skip_connection")})
  x = SparseTensor.from_packed(z["coords"], z["feats"], capacity=128)
  t, cond = z["t"] / 1000.0, z["cond"]
  weights = jnp.asarray(np.random.default_rng(6).standard_normal((128, model.out_channels)), jnp.float32)
  loss = lambda p, feats: jnp.sum(elastic.apply({"params": p}, x.replace_feats(feats), t, cond).feats * weights)
  value, (grad_p, grad_x) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, x.feats)
  assert_close(value, np.sum(base * np.asarray(weights)[:len(base)]), atol=1e-4, rtol=1e-5, what="loss")
  assert np.all(np.asarray(grad_x)[~np.asarray(x.mask)] == 0)
  # Directional derivative along the gradient vs a central difference of the plain model.
  grad_p, p0 = jax.tree.map(np.asarray, grad_p), jax.tree.map(np.asarray, params)
  norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in jax.tree.leaves(grad_p)))
  step = jax.tree.map(lambda g: (1e-3 / norm * g).astype(np.float32), grad_p)
  plain = lambda p: np.sum(np.asarray(forward(p, x, t, cond).feats) * np.asarray(weights), dtype=np.float64)
  numeric = (plain(jax.tree.map(np.add, p0, step)) - plain(jax.tree.map(np.subtract, p0, step))) / 2
  analytic = sum(np.sum(g * s, dtype=np.float64) for g, s in zip(jax.tree.leaves(grad_p), jax.tree.leaves(step)))
  assert abs(numeric - analytic) <= 2e-3 * abs(analytic), (numeric, analytic)
  # Another policy is another class with the same TRELLIS name and the same params.
  variant = ElasticSLatFlowModel.with_remat_policy("dots_with_no_batch_dims_saveable")
  assert variant.__name__ == "ElasticSLatFlowModel" and variant.remat_policy != elastic.remat_policy
  shapes = jax.eval_shape(jax.grad(lambda p: jnp.sum(variant(**{f: getattr(elastic, f) for f in (
      "resolution", "in_channels", "model_channels", "cond_channels", "out_channels", "num_blocks",
      "num_heads", "patch_size", "io_block_channels", "qk_rms_norm")}).apply({"params": p}, x, t, cond).feats)),
      params)
  assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, params)


def test_bfloat16_trunk_stays_close(slat):
  model, params, z, _, base = slat
  half = model.clone(dtype=jnp.bfloat16)
  out = jax.jit(lambda p, x: half.apply({"params": p}, x, z["t"] / 1000.0, z["cond"]))(
      params, SparseTensor.from_packed(z["coords"], z["feats"]))
  assert out.feats.dtype == jnp.float32
  assert_close(out.to_packed()[1], base, atol=5e-2, rtol=0, relative_to_max=True, what="bfloat16 trunk")


def _shapes(jaxpr, out):
  for eqn in jaxpr.eqns:
    out += [tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, "shape")]
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else [param]:
        if hasattr(sub, "eqns"):
          _shapes(sub, out)
        elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
          _shapes(sub.jaxpr, out)
  return out


def test_memory_grows_with_active_voxels_not_with_resolution(slat):
  """20k active voxels in a 64^3 grid: every array of the traced forward has the same shape when
  the grid is 256^3, so nothing is sized by the resolution (no dense R^3 x C grid)."""
  model, params, _, _, _ = slat
  coords = random_sites(np.random.default_rng(7), [20000], 64, clustered=False)
  x = SparseTensor.from_packed(coords, np.zeros((len(coords), model.in_channels), np.float32), coarse_levels=1)
  t, cond = jnp.zeros((1,)), jnp.zeros((1, 4, model.cond_channels))
  shapes = {}
  for r in (64, 256):
    big = model.clone(resolution=r)
    jaxpr = jax.make_jaxpr(lambda p, x: big.apply({"params": p}, x, t, cond))(params, x).jaxpr
    shapes[r] = _shapes(jaxpr, [])
  assert shapes[64] == shapes[256]


@pytest.mark.parametrize("skip", [True, False])
def test_config_fields_shape_the_network(skip):
  """Two io stages (patch 4), share_mod, qk_rms_norm_cross, with and without skip connections:
  the state-dict shapes follow the documented structure and a forward traces (no compilation)."""
  from conversion import trellis
  model = SLatFlowModel(resolution=16, in_channels=4, model_channels=32, cond_channels=8, out_channels=4,
                        num_blocks=1, num_heads=2, patch_size=4, io_block_channels=(8, 16),
                        use_skip_connection=skip, share_mod=True, qk_rms_norm_cross=True)
  shapes = trellis.expected_shapes(model)
  io = {f"input_blocks.{k}": (c_in, c_out) for k, (c_in, c_out) in enumerate([(8, 8), (8, 16), (16, 16), (16, 32)])}
  io |= {f"out_blocks.{k}": ((2 if skip else 1) * c_in, c_out)
         for k, (c_in, c_out) in enumerate([(32, 16), (16, 16), (16, 8), (8, 8)])}
  for block, (c_in, c_out) in io.items():
    assert shapes[f"{block}.norm1.weight"] == (c_in,) and shapes[f"{block}.conv2.conv.weight"] == (c_out, 3, 3, 3, c_out)
    assert shapes[f"{block}.conv1.conv.weight"] == (c_out, 3, 3, 3, c_in), block
    assert (f"{block}.skip_connection.weight" in shapes) == (c_in != c_out), block
  assert shapes["adaLN_modulation.1.weight"] == (6 * 32, 32) and "blocks.0.adaLN_modulation.1.weight" not in shapes
  assert shapes["blocks.0.cross_attn.q_rms_norm.gamma"] == (2, 16)
  params = jax.eval_shape(lambda: trellis.init_params(model, jax.random.key(0)))
  out = jax.eval_shape(lambda p, args: model.apply({"params": p}, *args), params, model.example_inputs(2))
  assert out.feats.shape == (16, 4) and out.feats.dtype == jnp.float32
