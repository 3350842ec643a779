"""MDT-dist objectives (Velocity Matching, Velocity Distillation), the CM baseline and flow matching."""
from mdt_jax.distill.config import objective_config
from mdt_jax.distill.objective import make_draws, objective
from mdt_jax.distill.spec import OBJECTIVES, ObjectiveSpec, TSchedule
from mdt_jax.distill.step import loss_and_grad_fn
from mdt_jax.distill.targets import TARGETS, Branch, predictions_and_targets

__all__ = ["OBJECTIVES", "TARGETS", "Branch", "ObjectiveSpec", "TSchedule", "loss_and_grad_fn", "make_draws",
           "objective", "objective_config", "predictions_and_targets"]
