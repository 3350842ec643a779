"""Sampling a toy set and scoring it: every method on the same conditions and noises, for stage 1,
stage 2 and the two-stage pipeline; and the reference rows. The demo, the study, launch/evaluate_run.py
and launch/ship_teachers.py score through it. `method` is a sampler's settings with a `name` (the
demo's `Method`); `plan` holds the sets' sizes (the demo's `DemoPlan`).

* stage 1: `per_condition` shapes for each toy condition of `conditions`, scored against
  the test split's first `per_condition` shapes of the condition (eval.evaluate_stage1), family
  fidelity classified by a toy train split of `fidelity_train_shapes` shapes.
* stage 2: features generated on real structures (the reference set's first
  `stage2_per_condition` shapes of each condition), scored exactly against the conditional mean
  of the features (eval.evaluate_stage2) and as a distribution against the real features of the
  same shapes (eval.evaluate_stage2_distribution: FD and 1-NNA of shape descriptors).
* pipeline: the stage-1 samples of the same method (same noises: the structures of its stage-1
  row), decoded to occupancy (the toy decoder, fold.latent_to_occupancy), then stage 2 of the same
  method on the voxels of the first `stage2_per_condition` of each condition; the row carries its
  structures' stage-1 scores and the stage-2 error of its features against the features its own
  voxels imply, and its distance to the real features.

Each part's result is written to `<workdir>/results/<part>/<method>.json` (and its samples to
`<workdir>/samples/<part>_<method>.npz`) as soon as it is computed; a rerun with the same plan and
checkpoints reads it back instead of recomputing. `sample_s` in a result is the wall time of its
sampling, compilation included where the part was the first to use a program (so it is not a
speed figure; the latency block measures speed).
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from mdt_jax import stages
from mdt_jax.data import toy_builder, toy_condition
from mdt_jax.data.toy_features import toy_features
from mdt_jax.eval.reference import ToySplit, split_halves, toy_split
from mdt_jax.eval.stage1 import evaluate_stage1
from mdt_jax.eval.stage2 import evaluate_stage2
from mdt_jax.eval.stage2_distribution import evaluate_stage2_distribution
from mdt_jax.generation.toy_sampling import packed_coords

TOY_CONFIG = "r16"


def jsonable(tree):
  if isinstance(tree, dict):
    return {k: jsonable(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [jsonable(v) for v in tree]
  if isinstance(tree, np.ndarray):
    return tree.tolist()
  if isinstance(tree, np.generic):
    return tree.item()
  return tree


@dataclasses.dataclass
class EvalSets:
  """Host data of the evaluation: conditions, tokens, reference sets, fidelity labels, structures."""
  cond_ids: np.ndarray        # int [N], the generated shapes' conditions (per_condition each)
  cond: np.ndarray            # float32 [N, L, C] their tokens
  reference: ToySplit      # the set every method is scored against
  second_real: ToySplit    # real shapes of the same conditions, not in `reference`
  labelled: ToySplit       # family fidelity's classifier set
  structures: list            # stage 2: real structures' voxels [n_i, 3] (np.argwhere order, as toy_features') ...
  structure_cond_ids: np.ndarray
  structure_feats: list       # ... and their real features [n_i, 8] (their own colour draws)
  second_structures: list     # stage 2's ideal row: as many shapes of the second real set
  second_structure_feats: list
  second_structure_cond_ids: np.ndarray
  resolution: int

  @classmethod
  def build(cls, plan) -> "EvalSets":
    named = {c.name: c for c in toy_builder.ToyShapes.BUILDER_CONFIGS}
    config = named[TOY_CONFIG]
    test = toy_split(config, "test")
    test = test.take(np.flatnonzero(np.isin(test.cond_id, plan.conditions)))
    first, second = split_halves(test.cond_id, plan.per_condition)
    reference, second_real = test.take(first), test.take(second)
    labels = dataclasses.replace(config, name=f"{config.name}_n{plan.fidelity_train_shapes}",
                                 num_train=plan.fidelity_train_shapes)
    labelled = toy_split(labels, "train")
    cond_ids = np.repeat(np.asarray(plan.conditions), plan.per_condition)
    picked = reference.take(split_halves(reference.cond_id, plan.stage2_per_condition)[0])
    second = second_real.take(split_halves(second_real.cond_id, plan.stage2_per_condition)[0])
    real, second_feats = _real_features(picked), _real_features(second)
    return cls(cond_ids=cond_ids, cond=toy_condition.condition_tokens(cond_ids), reference=reference,
               second_real=second_real, labelled=labelled,
               structures=[c for c, _ in real], structure_cond_ids=picked.cond_id,
               structure_feats=[f for _, f in real], second_structures=[c for c, _ in second_feats],
               second_structure_feats=[f for _, f in second_feats], second_structure_cond_ids=second.cond_id,
               resolution=config.resolution)

  def stage1(self, occupancy, cond_ids=None) -> dict:
    cond_ids = self.cond_ids if cond_ids is None else cond_ids
    return evaluate_stage1(occupancy, cond_ids, self.reference.occupancy, self.reference.cond_id,
                              self.labelled.occupancy, self.labelled.family)

  def stage2(self, shapes, feats, cond_ids) -> dict:
    """The exact error against the conditional mean, and `fd`, `one_nna`, `one_nna_exchangeable` of
    the features as a distribution against the real features of the stage-2 structures."""
    coords, feats = packed_coords(shapes), np.concatenate(feats)
    exact = evaluate_stage2(coords, feats, cond_ids, self.resolution)
    distribution = evaluate_stage2_distribution(coords, feats, len(shapes), packed_coords(self.structures),
                                                   np.concatenate(self.structure_feats), len(self.structures))
    return {**exact, **{k: distribution[k] for k in ("fd", "one_nna", "one_nna_exchangeable")}}


def _real_features(split: ToySplit) -> list:
  """(coords int32 [n_i, 3], feats float32 [n_i, 8]) of each shape, with its own colour draw."""
  return [toy_features(o, k, g) for o, k, g in zip(split.occupancy, split.cond_id, split.colour_gradient)]


class Results:
  """JSON results and .npz samples under the workdir, keyed by part and method, tagged with a
  fingerprint (plan and checkpoints): a stored result with another fingerprint is recomputed."""

  def __init__(self, workdir: Path, fingerprint: dict):
    self.root, self.fingerprint = Path(workdir), json.loads(json.dumps(fingerprint))

  def path(self, part: str, name: str) -> Path:
    return self.root / "results" / part / f"{name}.json"

  def samples_path(self, part: str, name: str) -> Path:
    return self.root / "samples" / f"{part}_{name}.npz"

  def get(self, part: str, name: str) -> dict | None:
    path = self.path(part, name)
    if not path.exists():
      return None
    stored = json.loads(path.read_text())
    return stored if stored.get("fingerprint") == self.fingerprint else None

  def put(self, part: str, name: str, result: dict, samples: dict | None = None) -> dict:
    if samples is not None:
      self.samples_path(part, name).parent.mkdir(parents=True, exist_ok=True)
      np.savez_compressed(self.samples_path(part, name), **samples)
    result = jsonable({**result, "fingerprint": self.fingerprint})
    path = self.path(part, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    return result


def scalars(metrics: dict) -> dict:
  """The scalar entries of a metrics dict, as floats (per-condition arrays dropped)."""
  return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float, np.number))}


def sample_and_score(stage: stages.Stage | str, samplers, sets: EvalSets, layout, params, method,
                     seed_offset: int = 0) -> tuple[dict, np.ndarray]:
  """`method`'s samples from `params` and the stage's scalar metrics -> (metrics, samples): stage 1
  (ss) the occupancy [N, R, R, R] of one sample per `sets.cond_ids` entry, with the noise of sampling
  seed `seed_offset`; stage 2 (slat) the features [sum n_i, C] generated on `sets.structures`, shapes
  concatenated in order (its noise is fixed per sample id: `seed_offset` must be 0)."""
  if not stages.get(stage, field="stage").sparse:
    _, occupancy = samplers.structures(params, sets.cond, method, np.arange(len(sets.cond_ids)), seed_offset)
    return scalars(sets.stage1(occupancy)), occupancy
  if seed_offset:
    raise ValueError(f"stage 2 samples have one noise per sample id; seed_offset {seed_offset} is not supported")
  cond = toy_condition.condition_tokens(sets.structure_cond_ids)
  feats = samplers.latents(params, sets.structures, cond, method, np.arange(len(sets.structures)), layout)
  return scalars(sets.stage2(sets.structures, feats, sets.structure_cond_ids)), np.concatenate(feats)


def real_scores(stage: stages.Stage | str, sets: EvalSets) -> dict:
  """The stage's real-vs-real row (scalars): stage 1 the second real set against the reference; stage 2
  the second real set's own features on its structures."""
  if stages.get(stage, field="stage").sparse:
    return scalars(sets.stage2(sets.second_structures, sets.second_structure_feats, sets.second_structure_cond_ids))
  return scalars(sets.stage1(sets.second_real.occupancy, sets.second_real.cond_id))


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def stage1(samplers, params, sets: EvalSets, method, results: Results) -> dict:
  """Stage-1 samples of `method` (one batch of all N shapes) and their scores."""
  (latents, occupancy), seconds = _timed(lambda: samplers.structures(params, sets.cond, method,
                                                                     np.arange(len(sets.cond_ids))))
  metrics = sets.stage1(occupancy)
  return results.put("stage1", method.name, {"metrics": metrics, "sample_s": seconds, "count": len(occupancy)},
                     {"latents": latents, "occupancy": occupancy, "cond_id": sets.cond_ids})


def stage2(samplers, params, sets: EvalSets, method, layout, results: Results) -> dict:
  """Stage-2 features of `method` on the real structures and their exact error."""
  ids = np.arange(len(sets.structures))
  cond = toy_condition.condition_tokens(sets.structure_cond_ids)
  feats, seconds = _timed(lambda: samplers.latents(params, sets.structures, cond, method, ids, layout))
  metrics = sets.stage2(sets.structures, feats, sets.structure_cond_ids)
  return results.put("stage2", method.name, {"metrics": metrics, "sample_s": seconds, "count": len(ids)},
                     {"coords": packed_coords(sets.structures), "feats": np.concatenate(feats), "cond_id": sets.structure_cond_ids})


def pipeline(samplers, params_slat, sets: EvalSets, method, layout, per_condition: int, results: Results) -> dict:
  """Stage 2 of `method` on its own stage-1 structures (read from its stage-1 samples): the first
  `per_condition` of each condition, with the noise of their sample ids."""
  occupancy = np.load(results.samples_path("stage1", method.name))["occupancy"]
  ids = np.concatenate([np.flatnonzero(sets.cond_ids == c)[:per_condition] for c in np.unique(sets.cond_ids)])
  shapes = [np.argwhere(occupancy[i]).astype(np.int32) for i in ids]
  feats, seconds = _timed(lambda: samplers.latents(params_slat, shapes, sets.cond[ids], method, ids, layout))
  metrics = sets.stage2(shapes, feats, sets.cond_ids[ids])
  stage1_metrics = results.get("stage1", method.name)["metrics"]
  return results.put("pipeline", method.name,
                     {"metrics": {"stage1": stage1_metrics, "stage2": metrics}, "sample_s": seconds,
                      "count": len(shapes)},
                     {"coords": packed_coords(shapes), "feats": np.concatenate(feats), "cond_id": sets.cond_ids[ids],
                      "sample_id": ids})


def reference_rows(sets: EvalSets, plan, results: Results) -> dict:
  """The real rows: the second real set against the reference (the ideal), fresh real sets of
  dataset seeds 1..spread_seeds (their spread), and stage 2's ideal: the second real set's features
  on its own structures."""
  named = {c.name: c for c in toy_builder.ToyShapes.BUILDER_CONFIGS}
  fresh = []
  for seed in range(1, plan.spread_seeds + 1):
    other = toy_split(dataclasses.replace(named[TOY_CONFIG], seed=seed), "test")
    other = other.take(np.flatnonzero(np.isin(other.cond_id, plan.conditions)))
    other = other.take(split_halves(other.cond_id, plan.per_condition)[0])
    fresh.append(sets.stage1(other.occupancy, other.cond_id))
  return results.put("reference", "real", {
      "second_real": sets.stage1(sets.second_real.occupancy, sets.second_real.cond_id),
      "fresh_real": fresh,
      "stage2_real": sets.stage2(sets.second_structures, sets.second_structure_feats,
                                 sets.second_structure_cond_ids)})


def seed_spread(samplers, params, sets: EvalSets, method, plan, results: Results) -> dict:
  """Stage-1 scores of `method` with sampling seeds 1..spread_seeds (seed 0 is its main row)."""
  runs = [sets.stage1(samplers.structures(params, sets.cond, method, np.arange(len(sets.cond_ids)), s)[1])
          for s in range(1, plan.spread_seeds + 1)]
  return results.put("spread", method.name, {"runs": runs})
