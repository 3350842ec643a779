"""MDT-dist objectives (Velocity Matching, Velocity Distillation), the CM baseline and flow matching."""
from mdt_jax.distill.config import objective_config
from mdt_jax.distill.objective import OBJECTIVES, make_draws, objective
from mdt_jax.distill.step import loss_and_grad_fn
from mdt_jax.distill.targets import Branch, predictions_and_targets

__all__ = ["OBJECTIVES", "Branch", "loss_and_grad_fn", "make_draws", "objective", "objective_config",
           "predictions_and_targets"]
