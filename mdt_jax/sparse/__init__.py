"""Sparse voxel tensors and the operations of the structured-latent flow."""
from mdt_jax.sparse.tensor import SparseTensor, bucket_capacity

__all__ = ["SparseTensor", "bucket_capacity"]
