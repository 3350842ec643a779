"""Student and teacher networks for a training run, from TRELLIS or orbax checkpoints or fresh."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from conversion import trellis
from mdt_jax import numerics
from mdt_jax.models import registry

def compute_dtype(config):
  """The trunk's compute dtype for training: float32 or bfloat16 (no float16: it would need loss scaling)."""
  return numerics.compute_dtype(config.compute_dtype, allowed=numerics.TRAINING_DTYPES,
                                field="config.compute_dtype")


def student_and_teacher(config):
  """-> (student_model, student_params, teacher_model or None, teacher_params or None).

  Flow matching (``objective="fm"``) has no teacher. The student starts from the teacher
  (``student_init="teacher"``), from a checkpoint path, or fresh from ``config.model`` ("").
  """
  dtype = compute_dtype(config)
  teacher, teacher_params = None, None
  if config.objective != "fm":
    if not config.teacher_checkpoint:
      raise ValueError("config.teacher_checkpoint: distillation needs a teacher checkpoint")
    teacher, teacher_params = trellis.load_model(config.teacher_checkpoint, dtype=dtype)
  if config.student_init == "teacher":
    if teacher is None:
      raise ValueError("config.student_init='teacher' needs a teacher (objective != 'fm')")
    return teacher, jax.tree.map(jnp.copy, teacher_params), teacher, teacher_params
  if config.student_init:
    student, params = trellis.load_model(config.student_init, dtype=dtype)
    return student, params, teacher, teacher_params
  if not config.model.name:
    raise ValueError("config.model: a fresh student (student_init='') needs config.model.name and args")
  student = registry.build_model(config.model.to_dict(), dtype=dtype)
  params = jax.jit(lambda key: registry.init_params(student, key))(jax.random.PRNGKey(config.seed))
  return student, params, teacher, teacher_params


def image_encoder(config, student):
  """-> (DINOv2 model, its float32 params) when the run encodes condition images, else (None, None).

  ``config.dinov2_checkpoint`` (``.safetensors`` or ``.pth``) and ``config.dinov2_config`` (a preset
  name or a json with ``constructor_args``) are read by ``conversion.dinov2.load_checkpoint``. The
  encoder computes in float32 whatever ``compute_dtype`` is, as TRELLIS runs it; its width must be the
  student's ``cond_channels``.
  """
  if config.data.dataset != "trellis" or config.data.condition != "image":
    return None, None
  if not config.dinov2_checkpoint:
    raise ValueError("config.data.condition='image' needs config.dinov2_checkpoint (DINOv2 weights, "
                     ".safetensors or .pth)")
  from conversion import dinov2  # only image-conditioned runs need it
  model, params = dinov2.load_checkpoint(config.dinov2_checkpoint, config.dinov2_config or None)
  if model.embed_dim != student.cond_channels:
    raise ValueError(f"the DINOv2 of {config.dinov2_checkpoint} is {model.embed_dim} wide but the student's "
                     f"cond_channels is {student.cond_channels}")
  return model, params
