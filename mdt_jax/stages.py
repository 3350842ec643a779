"""The two stages of TRELLIS's generation, each an object chosen once from its name (``config.stage``).

  SS    stage 1, sparse structure: a dense latent grid x0 [B, R, R, R, C] channels-last, sampled by a
        ``SparseStructureFlowModel``; scored as a set of occupancy grids (1-NNA, COV, MMD, fidelity).
  SLAT  stage 2, structured latents: a ``SparseTensor`` of per-voxel features [N, C] on a given
        structure (per-device ``SparseShards`` in training), sampled by a ``SLatFlowModel`` or
        ``ElasticSLatFlowModel``; scored by the feature distribution (FD, 1-NNA) and the exact error.

Code branches on what a stage is (``stage.sparse``) or looks things up by ``stage.name``; it never
compares stage names. ``get`` is the one place a name becomes a stage (docs/design.md, Stages).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Stage:
  """name: ``config.stage`` and the stage's key in directories, files and per-stage tables.
  sparse: latents are ``SparseTensor``s on given voxels (batches per device), not dense grids.
  flow_models: the TRELLIS class names of the stage's flow. metrics: the toy evaluation's scalar
  metrics of the stage, headline first (lower is better for each)."""
  name: str
  number: int
  title: str
  sparse: bool
  flow_models: tuple[str, ...]
  metrics: tuple[str, ...]

  @property
  def label(self) -> str:
    """'stage 1 (sparse structure)'."""
    return f"stage {self.number} ({self.title})"

  @property
  def headline(self) -> str:
    return self.metrics[0]


SS = Stage("ss", 1, "sparse structure", sparse=False, flow_models=("SparseStructureFlowModel",),
           metrics=("1nna", "cov", "mmd", "fidelity"))
SLAT = Stage("slat", 2, "structured latents", sparse=True, flow_models=("SLatFlowModel", "ElasticSLatFlowModel"),
             metrics=("fd", "one_nna", "rmse"))
STAGES = (SS, SLAT)
NAMES = tuple(s.name for s in STAGES)
_BY_NAME = {s.name: s for s in STAGES}


def get(stage: str | Stage, field: str = "config.stage") -> Stage:
  """The stage named ``stage`` (a Stage is returned as it is). An unknown name is a ValueError naming
  ``field`` and the known names."""
  if isinstance(stage, Stage):
    return stage
  if stage not in _BY_NAME:
    raise ValueError(f"{field} must be one of {NAMES}, got {stage!r}")
  return _BY_NAME[stage]
