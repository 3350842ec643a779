"""Sampling shapes with the two TRELLIS flows, and writing what came out (npz, PLY, PNG views).

  pipeline      TwoStagePipeline: condition tokens -> structure -> structured latents; StageSampling; the
                stages both families share (StructureStage, LatentStage).
  trellis2_pipeline  Trellis2Pipeline: TRELLIS.2's 512 / 1024 types, structure -> shape -> texture latents.
  trellis2_run  a TRELLIS.2 sampling run to a directory (launch/sample.py with a trellis2_* config).
  toy_sampling  ToySamplers: both toy stages with fixed noises, stage 2 in chunks of one layout.
  export        npz, PLY and PNG views of what came out.
  sample_run    a sampling run to a directory (launch/sample.py).
  sample_assets the SLat decoders of a sampling run and each shape's 3D asset files.
  pipeline_folder  a released TRELLIS pipeline folder (pipeline.json + ckpts/) -> sample config fields.
"""
from mdt_jax.generation.pipeline import Generation, StageSampling, TwoStagePipeline
from mdt_jax.generation.trellis2_pipeline import Trellis2Generation, Trellis2Pipeline

__all__ = ["Generation", "StageSampling", "Trellis2Generation", "Trellis2Pipeline", "TwoStagePipeline"]
