"""Rectified-flow maths and samplers for dense latents and ``SparseTensor``s alike.

* ``paths``: x_t, the velocity target, conversions between v, x0 and eps.
* ``schedules``: host-side float64 time grids, TRELLIS's ``rescale_t`` warp.
* ``guidance``: classifier-free guidance (TRELLIS's and TRELLIS.2's conventions, CFG-rescale) with both
  branches in one forward pass.
* ``samplers``: ``sample`` (Euler, CFG, guidance interval; one compiled loop) and ``jit_sample``.
"""
from mdt_jax.flow.paths import (diffuse, eps_from_v, noise_scale, v_from_eps, v_from_x0, velocity_target,
                                x0_from_v)
from mdt_jax.flow.samplers import jit_sample, sample
from mdt_jax.flow.schedules import EulerSchedule, euler_schedule, model_time, rescale_time, time_grid

__all__ = ["EulerSchedule", "diffuse", "eps_from_v", "euler_schedule", "jit_sample", "model_time", "noise_scale",
           "rescale_time", "sample", "time_grid", "v_from_eps", "v_from_x0", "velocity_target", "x0_from_v"]
