"""The objective as a frozen, hashable spec: built from a training config and validated before
anything is traced; jitted code closes over the spec, never over a ConfigDict.

    spec = ObjectiveSpec.of(config)     # a ConfigDict with the objective's fields, or a spec (as is)
"""
from __future__ import annotations

import dataclasses
from typing import Any

OBJECTIVES = ("fm", "vm", "vd", "vm_vd", "cm")
DISTILL_TYPES = ("discrete", "continuous")
D_NORM_OVER = ("sample", "element")
T_SCHEDULES = ("logitNormal", "uniform")
GUIDANCE_CONVENTIONS = ("trellis", "trellis2")   # mdt_jax.flow.guidance: TRELLIS.2's g is TRELLIS's 1 + w


def _choice(name: str, value, allowed):
  if value not in allowed:
    raise ValueError(f"config.{name} must be one of {allowed}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class TSchedule:
  """Training-time draws of t: ``logitNormal`` (sigmoid(std z + mean), z ~ N(0, 1)) or ``uniform``."""
  name: str = "logitNormal"
  mean: float = 1.0
  std: float = 1.0

  def __post_init__(self):
    _choice("t_schedule.name", self.name, T_SCHEDULES)


@dataclasses.dataclass(frozen=True)
class ObjectiveSpec:
  """The objective's fields of a training config (docs/design.md, Config names; defaults as
  ``mdt_jax.distill.objective_config``). Guidance ``cfg_teacher_*`` is a float or a tuple to draw one
  from per step, in ``guidance_convention`` (TRELLIS's w, or TRELLIS.2's g = 1 + w)."""
  objective: str = "vm_vd"
  distill_type: str = "discrete"
  distill_interval: float = 0.01
  cfg_teacher_vm: float | tuple[float, ...] = 40.0
  cfg_teacher_vd: float | tuple[float, ...] = 100.0
  lambda_vm: float = 1.0
  lambda_vd: float = 1.0
  d_norm: bool = True
  d_norm_c: float = 0.1
  d_norm_over: str = "sample"
  p_uncond: float = 0.0
  sigma_min: float = 1e-5
  multiphase: int = 1
  rescale_t: float = 1.0
  t_schedule: TSchedule = TSchedule()
  vd_fresh_draws: bool = False
  guidance_convention: str = "trellis"

  def __post_init__(self):
    _choice("objective", self.objective, OBJECTIVES)
    _choice("guidance_convention", self.guidance_convention, GUIDANCE_CONVENTIONS)
    _choice("distill_type", self.distill_type, DISTILL_TYPES)
    _choice("d_norm_over", self.d_norm_over, D_NORM_OVER)

  @classmethod
  def of(cls, config: Any) -> "ObjectiveSpec":
    """The spec of a config (its other fields are ignored; missing ones take the defaults)."""
    if isinstance(config, cls):
      return config
    names = [f.name for f in dataclasses.fields(cls) if f.name in config]
    values = {name: config[name] for name in names}
    if "t_schedule" in values:
      values["t_schedule"] = TSchedule(**dict(values["t_schedule"].items()))
    for name in ("cfg_teacher_vm", "cfg_teacher_vd"):
      if isinstance(values.get(name), (list, tuple)):
        values[name] = tuple(float(v) for v in values[name])
    return cls(**values)

  @property
  def target(self) -> str:
    """The target kind: ``cm`` for the CM baseline, else the distill type (discrete | continuous)."""
    return "cm" if self.objective == "cm" else self.distill_type

  @property
  def uses_interval(self) -> bool:
    """The discrete VM target and the CM baseline step back by the interval D."""
    return self.objective == "cm" or (self.objective != "fm" and self.distill_type == "discrete")
