"""The toy benchmark demo (launch/demo.py): distil both toy teachers with MDT-dist and the CM
baseline, evaluate every sampler on the same conditions and noises, write report.md.

Modules, one job each:
  plan          the budget (default and quick) and the compared samplers (`Method`).
  distill_runs  one distillation run per stage and student through mdt_jax.train.loop.train.
Sampling and scoring live below the demo: mdt_jax.generation.toy_sampling (fixed noises, jitted
samplers, stage-2 chunk packing, timing) and mdt_jax.eval.scoring (stage 1, stage 2, pipeline and
reference rows, stored as they finish).
  progress      progress lines with an ETA.
  figures       quality against steps, training curves, sample renders (PNG).
  report        report.md from the stored results.
  run           run_demo: everything above, in order.
"""
