"""The objective's fields of a training config (docs/design.md, Config names), with published defaults."""
from __future__ import annotations

import ml_collections


def objective_config(**overrides) -> ml_collections.ConfigDict:
  """MDT-dist's published objective settings (arXiv 2509.04406; the reference's json configs).

  Fields: ``objective`` (fm | vm_vd | vm | vd | cm), ``distill_type`` (discrete | continuous),
  ``distill_interval`` D, guidance ``cfg_teacher_vm``/``cfg_teacher_vd`` (a float, or a list to draw
  one from per step), ``lambda_vm``/``lambda_vd``, ``d_norm``, its constant ``d_norm_c`` and ``d_norm_over``
  (sample: the published norm over all of a sample's elements; element: its root mean square),
  ``p_uncond`` (condition dropout), ``sigma_min``, ``multiphase`` (CM segments), ``rescale_t``
  (time warp of the draws), ``t_schedule`` (name logitNormal | uniform, mean, std) and
  ``vd_fresh_draws`` (VD draws its own noise and t instead of reusing the VM step's) and
  ``guidance_convention`` (trellis: ``cfg_teacher_*`` is w in ``(1 + w) v_c - w v_u``; trellis2: g in
  ``g v_c + (1 - g) v_u``, g = 1 + w).
  """
  config = ml_collections.ConfigDict(dict(
      objective="vm_vd", distill_type="discrete", distill_interval=0.01,
      cfg_teacher_vm=40.0, cfg_teacher_vd=100.0, lambda_vm=1.0, lambda_vd=1.0,
      d_norm=True, d_norm_c=0.1, d_norm_over="sample", p_uncond=0.0, sigma_min=1e-5, multiphase=1, rescale_t=1.0,
      t_schedule=dict(name="logitNormal", mean=1.0, std=1.0), vd_fresh_draws=False, guidance_convention="trellis"))
  config.update(overrides)
  return config
