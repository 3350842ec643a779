"""Data: the procedural toy 3D dataset, TRELLIS-layout latent datasets, and the input pipeline.

Modules, one job each:
  fold             occupancy <-> stage-1 latent (space-to-depth by 2, channels-last).
  toy_shapes       primitive families, random poses, voxelisation to occupancy grids.
  toy_condition    condition ids (family x size bucket) and their fixed token table.
  toy_features     the stage-2 toy features of occupied voxels (training and evaluation share it).
  tfds_base        the base class of our TFDS builders (a TFDS packaging fix).
  toy_builder      TFDS builder `ToyShapes` (array_record files).
  toy_recovery     nearest-neighbour-by-IoU family recovery.
  toy_inputs       toy records -> model inputs (dense latents, sparse voxels, condition tokens).
  trellis_layout   reading and validating a TRELLIS dataset root (metadata.csv, latent npz files).
  trellis_builder  TFDS builder `TrellisLatents` (SS or SLat latents per instance).
  trellis_inputs   TRELLIS records -> model inputs (latents plus image, token or caption condition).
  trellis_testing  writes a tiny TRELLIS-layout root, with deliberately broken instances, for tests.
  sparse_batch     variable-size instances -> per-device padded sparse arrays (docs/design.md, Sparse tensors).
  pipeline         sharded, shuffled, resumable batch iterators over any random-access source.
"""
