"""Run by tests/test_train.py in a subprocess with 8 forced CPU devices (XLA_FLAGS set by the caller).

    python tests/train_mesh_check.py --teacher=STEM --data_dir=DIR --workdir=DIR

1. A dense VM+VD distillation step (the teacher sharded like the student) and a sparse flow-matching
   step on a 2x4 (data, fsdp) mesh equal the same steps on one device (float tolerance), two dense steps
   and one sparse step:
   the metrics, Adam's moments (functions of the gradients) and the params and EMA. Adam turns a
   gradient that is zero in exact arithmetic (the key bias of an attention: softmax ignores a shift)
   into +-lr from float noise alone, so params are compared where the gradient is not negligible.
2. The 2x4 state saved with orbax restores onto a (data=1, fsdp=8) mesh and onto one device, exactly.
Exits non-zero (an AssertionError naming the leaf) on any mismatch.
"""
import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from configs import distill, teacher  # noqa: E402
from mdt_jax.train import checkpoints, models, partitioning  # noqa: E402
from mdt_jax.train.inputs import TrainInputs  # noqa: E402
from mdt_jax.train.optimizer import make_optimizer  # noqa: E402
from mdt_jax.train.state import init_state  # noqa: E402
from mdt_jax.train.step import jit_train_step  # noqa: E402

RTOL, ATOL = 2e-5, 2e-6  # float32 sums in another order (sharded reductions)


def run_steps(config, mesh, batches):
  """Initial state on ``mesh`` -> ``len(batches)`` compiled steps -> (state, [metrics])."""
  student, params, teacher_model, teacher_params = models.student_and_teacher(config)
  optimizer = make_optimizer(config, params)
  abstract = jax.eval_shape(lambda p: init_state(p, optimizer, config.ema_rates, config.seed), params)
  state_shardings = partitioning.tree_shardings(abstract, mesh)
  params = jax.device_put(params, partitioning.tree_shardings(params, mesh))
  state = jax.jit(lambda p: init_state(p, optimizer, config.ema_rates, config.seed),
                  out_shardings=state_shardings)(params)
  frozen = {"teacher": teacher_params or {}, "image_encoder": {}}
  frozen_shardings = partitioning.tree_shardings(frozen, mesh)
  frozen = jax.device_put(frozen, frozen_shardings)
  step = jit_train_step(config, optimizer, mesh, state_shardings, frozen_shardings, student=student,
                        teacher=teacher_model)
  metrics = []
  for batch in batches:
    batch = jax.tree.map(lambda a: jax.device_put(a, NamedSharding(
        mesh, P(None, partitioning.BATCH_AXES, *([None] * (a.ndim - 2))))), batch)
    state, m = step(state, frozen, batch)
    metrics.append(jax.device_get(m))
  return state, state_shardings, metrics


def assert_trees_close(a, b, what, rtol=RTOL, atol=ATOL, where=None, leaf_relative=False):
  """Leafwise allclose; ``where``: {path: mask} of the elements to compare (other leaves: all);
  ``leaf_relative``: atol times the leaf's max |value|."""
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    tol = atol * max(np.max(np.abs(y), initial=0.0), 1e-30) if leaf_relative else atol
    mask = (where or {}).get(jax.tree_util.keystr(path))
    if mask is not None:
      x, y = x[mask], y[mask]
    np.testing.assert_allclose(x, y, rtol=rtol, atol=tol, err_msg=f"{what}: {jax.tree_util.keystr(path)}")


def check_mesh_equals_single_device(config, workdir, steps):
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 4})
  one = partitioning.make_mesh({"data": 1}, devices=jax.devices()[:1])
  start = time.perf_counter()
  inputs = TrainInputs(config, workdir, mesh)
  batches = [jax.tree.map(np.asarray, next(inputs)) for _ in range(steps)]  # host copies, 8 shards' layout
  state, shardings, metrics = run_steps(config, mesh, batches)
  state_1, _, metrics_1 = run_steps(config, one, batches)
  assert any(s.spec and "fsdp" in str(s.spec) for s in jax.tree.leaves(shardings.params)), "nothing fsdp-sharded"
  assert_trees_close(metrics, metrics_1, f"{config.stage} metrics")
  adam = state_1.opt_state.inner_states["train"].inner_state[1][0]  # (clip, adamw) -> ScaleByAdamState
  assert_trees_close(state.opt_state.inner_states["train"].inner_state[1][0], adam, f"{config.stage} adam moments",
                     rtol=0, atol=3e-3, leaf_relative=True)  # zero-initialised adaLN: sums that cancel
  # (jax 0.12's XLA:CPU sums the sharded gradients in another order: 1.05e-3 of a leaf's max, measured)
  informative = {jax.tree_util.keystr(path): np.abs(np.asarray(m)) > 1e-2 * np.max(np.abs(np.asarray(m)), initial=0)
                 for path, m in jax.tree_util.tree_leaves_with_path(adam.mu)}
  step_tol = 2e-2 * config.lr  # an Adam step moves an element by about lr
  assert_trees_close(state.params, state_1.params, f"{config.stage} params", atol=step_tol, where=informative)
  for ema, ema_1 in zip(state.ema, state_1.ema):
    assert_trees_close(ema, ema_1, f"{config.stage} ema", atol=step_tol, where=informative)
  print(f"{config.stage} {config.objective}: 2x4 mesh == 1 device over {steps} step(s), loss "
        f"{metrics[-1]['loss']:.6g} ({time.perf_counter() - start:.0f} s)")
  return state, shardings


def check_restore_on_other_meshes(config, state, workdir):
  saved = checkpoints.Checkpoints(workdir, config)
  saved.save(int(state.step), state, {"next_index": 0})
  saved.wait()
  for shape, devices in (({"data": 1, "fsdp": 8}, None), ({"data": 1}, jax.devices()[:1])):
    mesh = partitioning.make_mesh(shape, devices=devices)
    shardings = partitioning.tree_shardings(state, mesh)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), state, shardings)
    restored, data_state = checkpoints.Checkpoints(workdir, config).restore_latest(abstract)
    assert data_state == {"next_index": 0}
    for x, y, s in zip(jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(shardings)):
      assert x.sharding == s, (x.sharding, s)
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    print(f"restored the 2x4 state onto {dict(mesh.shape)} exactly")


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--teacher", required=True)
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--workdir", required=True)
  args = parser.parse_args()
  assert jax.device_count() == 8, f"needs 8 devices, got {jax.devices()}"
  common = {"batch_size_per_device": 1, "data.data_dir": args.data_dir, "data.toy_num_train": 240}
  dense = distill.get_config("ss_toy")
  dense.update_from_flattened_dict({**common, "teacher_checkpoint": args.teacher})
  sparse = teacher.get_config("slat_toy")
  sparse.update_from_flattened_dict({**common, "model.args.num_blocks": 1, "model.args.model_channels": 32,
                                     "model.args.io_block_channels": (), "model.args.patch_size": 1})
  state, _ = check_mesh_equals_single_device(dense, args.workdir, steps=2)
  check_mesh_equals_single_device(sparse, args.workdir, steps=1)
  check_restore_on_other_meshes(dense, state, Path(args.workdir) / "restore")


if __name__ == "__main__":
  main()
