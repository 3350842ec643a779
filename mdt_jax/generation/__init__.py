"""Sampling shapes with the two TRELLIS flows, and writing what came out (npz, PLY, PNG views)."""
from mdt_jax.generation.pipeline import Generation, StageSampling, TwoStagePipeline

__all__ = ["Generation", "StageSampling", "TwoStagePipeline"]
