"""mdt-jax: MDT-dist few-step distillation of TRELLIS flow transformers in JAX/Flax."""
