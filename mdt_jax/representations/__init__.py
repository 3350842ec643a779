"""What the SLat decoders' outputs become: 3D Gaussians, Strivec radiance fields, meshes."""
