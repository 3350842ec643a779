"""Checkpoint conversion between upstream PyTorch layouts (TRELLIS, DINOv2) and Flax params."""
