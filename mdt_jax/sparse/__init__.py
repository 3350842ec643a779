"""Sparse voxel tensors and the operations of the structured-latent flow."""
from mdt_jax.sparse.conv import SparseConv3d, sparse_conv3d
from mdt_jax.sparse.neighbours import neighbour_table
from mdt_jax.sparse.resample import Downsampling, downsampling, subdivide
from mdt_jax.sparse.tensor import SparseShards, SparseTensor, bucket_capacity, coarse_capacities

__all__ = ["Downsampling", "SparseConv3d", "SparseShards", "SparseTensor", "bucket_capacity", "coarse_capacities",
           "downsampling", "neighbour_table", "sparse_conv3d", "subdivide"]
