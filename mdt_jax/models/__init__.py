"""Flax models: DiT building blocks, the TRELLIS flow transformers, the SS decoder, DINOv2."""
from mdt_jax.models.attention import attention

__all__ = ["attention"]
