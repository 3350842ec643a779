"""Model configs ({"name", "args"} as in TRELLIS checkpoints) used by the training variants."""

# The toy stage-1 teacher: 16^3 occupancy folded to an 8 x 8^3 latent, patch 2 -> 64 tokens, width
# 128, 4 blocks (~1.5 M params). A feasibility study on the 2-core CPU found that patch 4 did not
# learn and 16^3 tokens (R = 32) trained at ~3 s/step; this size trains at a few steps/s.
SS_TOY = {"name": "SparseStructureFlowModel", "args": dict(
    resolution=8, in_channels=8, out_channels=8, model_channels=128, cond_channels=64, num_blocks=4,
    num_heads=4, mlp_ratio=4, patch_size=2, pe_mode="ape", qk_rms_norm=True, use_fp16=False)}

# The toy stage-2 teacher: 8-channel features on the occupied voxels of a 16^3 grid (~200 a shape),
# one 2x down-sampling stage (width 32) around a width-64 transformer of 4 blocks.
SLAT_TOY = {"name": "SLatFlowModel", "args": dict(
    resolution=16, in_channels=8, out_channels=8, model_channels=64, cond_channels=64, num_blocks=4,
    num_heads=4, mlp_ratio=4, patch_size=2, num_io_res_blocks=2, io_block_channels=(32,), pe_mode="ape",
    qk_rms_norm=True, use_skip_connection=True, use_fp16=False)}

# TRELLIS-image-large (the published MDT-dist students start from these).
SS_FLOW_L = {"name": "SparseStructureFlowModel", "args": dict(
    resolution=16, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024, num_blocks=24,
    num_heads=16, mlp_ratio=4, patch_size=1, pe_mode="ape", qk_rms_norm=True, use_fp16=True)}
SLAT_FLOW_L = {"name": "ElasticSLatFlowModel", "args": dict(
    resolution=64, in_channels=8, out_channels=8, model_channels=1024, cond_channels=1024, num_blocks=24,
    num_heads=16, mlp_ratio=4, patch_size=2, num_io_res_blocks=2, io_block_channels=(128,), pe_mode="ape",
    qk_rms_norm=True, use_fp16=True)}

# TRELLIS.2's three flows at the size of its fixtures (tests/fixtures/trellis2: ss_flow, shape_flow,
# tex_flow): its released flags (rope, share_mod, both q/k norms, mlp_ratio 5.3334, "scaled" init) at
# width 64, 2 blocks, condition width 48. The texture flow's input is 8 noise + 8 shape-latent channels.
_TRELLIS2_TINY = dict(in_channels=8, out_channels=8, model_channels=64, cond_channels=48, num_blocks=2, num_heads=2,
                      mlp_ratio=5.3334, pe_mode="rope", share_mod=True, initialization="scaled", qk_rms_norm=True,
                      qk_rms_norm_cross=True)
TRELLIS2_SS_TINY = {"name": "SparseStructureFlowModel", "args": dict(_TRELLIS2_TINY, resolution=8)}
TRELLIS2_SHAPE_TINY = {"name": "ElasticSLatFlowModel", "args": dict(_TRELLIS2_TINY, resolution=32)}
TRELLIS2_TEX_TINY = {"name": "ElasticSLatFlowModel", "args": dict(_TRELLIS2_TINY, resolution=32, in_channels=16)}

# TRELLIS.2's released flows at full size (its repository's configs/gen; ~1.29 B parameters each):
# width 1536, 30 blocks, 12 heads of 128, condition DINOv3 ViT-L/16 (1024 channels). The sparse
# structure is 16^3 x 8; the shape and texture latents have 32 channels, the texture flow's input 32
# noise + 32 shape-latent channels.
_TRELLIS2_L = dict(model_channels=1536, cond_channels=1024, num_blocks=30, num_heads=12, mlp_ratio=5.3334,
                   pe_mode="rope", share_mod=True, initialization="scaled", qk_rms_norm=True, qk_rms_norm_cross=True)
TRELLIS2_SS_L = {"name": "SparseStructureFlowModel", "args": dict(_TRELLIS2_L, resolution=16, in_channels=8,
                                                                  out_channels=8)}
TRELLIS2_SHAPE_L = {"name": "ElasticSLatFlowModel", "args": dict(_TRELLIS2_L, resolution=32, in_channels=32,
                                                                 out_channels=32)}
TRELLIS2_TEX_L = {"name": "ElasticSLatFlowModel", "args": dict(_TRELLIS2_L, resolution=32, in_channels=64,
                                                               out_channels=32)}
