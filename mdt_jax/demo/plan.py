"""What the demo runs: its budget (`DemoPlan`) and the sampling methods it compares (`Method`).

The default budget was sized on the 2-core CPU machine while other jobs loaded it (load average
7-10); see `default_plan`. `quick_plan` runs a few steps of everything (CI).
"""
from __future__ import annotations

import dataclasses

from mdt_jax import stages

STAGES = stages.NAMES
STUDENTS = {"mdt": "vm_vd", "cm": "cm"}  # distilled student -> its objective (configs/distill.py)


@dataclasses.dataclass(frozen=True)
class Method:
  """One sampler: which params (`teacher`, or a student of STUDENTS), Euler steps, guidance w."""
  name: str
  params: str
  steps: int
  cfg_strength: float = 0.0

  @property
  def nfe(self) -> int:
    """Network evaluations per sample and stage (guidance runs both branches: 2 per step)."""
    return self.steps * (2 if self.cfg_strength else 1)

  @property
  def label(self) -> str:
    who = {"teacher": "teacher", "euler": "naive Euler (teacher)", "mdt": "MDT-dist (VM+VD)",
           "cm": "CM baseline"}[self.name.split("_")[0]]
    guidance = f", w = {self.cfg_strength:g}" if self.cfg_strength else ""
    return f"{who}, {self.steps} step{'s' if self.steps > 1 else ''}{guidance}"


@dataclasses.dataclass(frozen=True)
class DemoPlan:
  """The demo's budget.

  distill_steps: optimiser steps of every distillation run per stage (MDT-dist and CM alike).
  distill_overrides: per stage, toy-config fields the demo's runs change ({} keeps the config).
  conditions: the toy condition ids evaluated (cond_id = family * 3 + size bucket).
  per_condition: generated shapes per condition (and reference shapes per condition: the test
    split's first `per_condition` of each).
  stage2_per_condition: real structures per condition whose features stage 2 generates.
  fidelity_train_shapes: size of the toy train split (generated in memory) that labels family
    fidelity (20,000: the dataset's own train split).
  spread_seeds: extra sampling seeds of the spread rows (`spread_methods`), and fresh real sets
    (dataset seeds) of the real row's spread.
  chunk_shapes, chunk_voxels, chunk_parents: the one stage-2 layout the evaluation compiles (shapes,
    voxel rows and 2x-parent rows a chunk holds); a larger shape is sampled alone.
  latency_repeats: timed batch-1 calls per method (median reported), after one warm-up call.
  teacher_steps, cfg_strength: the teacher's reference sampler and its guidance w.
  toy_num_train: train split size of the distillation runs' toy dataset (0: the full 20,000).
  render_shapes: shapes per method in the side-by-side renders.
  """
  distill_steps: dict
  distill_overrides: dict = dataclasses.field(default_factory=dict)
  conditions: tuple = tuple(3 * family + 1 for family in range(8))  # every family, middle size
  per_condition: int = 16
  stage2_per_condition: int = 4
  fidelity_train_shapes: int = 20_000
  spread_seeds: int = 2
  chunk_shapes: int = 16
  chunk_voxels: int = 4096
  chunk_parents: int = 1024
  latency_repeats: int = 5
  teacher_steps: int = 25
  cfg_strength: float = 0.5
  toy_num_train: int = 0
  render_shapes: int = 6
  seed: int = 0

  def methods(self) -> list[Method]:
    """The compared samplers, in report order."""
    n = self.teacher_steps
    return [Method(f"teacher_{n}", "teacher", n), Method(f"teacher_{n}_cfg", "teacher", n, self.cfg_strength),
            *(Method(f"euler_{k}", "teacher", k) for k in (1, 2, 4)),
            *(Method(f"cm_{k}", "cm", k) for k in (1, 2)), *(Method(f"mdt_{k}", "mdt", k) for k in (1, 2))]

  def spread_methods(self) -> list[Method]:
    """The samplers whose stage-1 spread over sampling seeds is measured: the distilled students."""
    return [m for m in self.methods() if m.params in STUDENTS]

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)


def default_plan() -> DemoPlan:
  """Sized on the 2-core machine. The default run took 19.7 min there (load average 1.4-3.9, the test
  suite running beside it): stage-1 distillation 2.3 s a step (VM+VD, batch 32) and 2.2 s (CM),
  stage-2 9.9 s (VM+VD, batch 16, coarse capacities, one compiled program through the slat_toy
  floors) and 4.3 s (CM), compilation included; the evaluation ~9 min.
  """
  return DemoPlan(distill_steps={"ss": 60, "slat": 40})


def quick_plan() -> DemoPlan:
  """A few steps of everything on small sets (CI): every part runs, no number means anything."""
  return DemoPlan(distill_steps={"ss": 2, "slat": 1}, conditions=(1, 13), per_condition=2, stage2_per_condition=1,
                  distill_overrides={"ss": {"batch_size_per_device": 4},
                                     "slat": {"batch_size_per_device": 2, "data": {"min_capacity": 0, "min_coarse_capacity": 0}}},
                  fidelity_train_shapes=48, spread_seeds=1, chunk_shapes=4, chunk_voxels=8192, chunk_parents=2048,
                  latency_repeats=1, toy_num_train=48, render_shapes=2)
