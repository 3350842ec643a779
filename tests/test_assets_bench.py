"""The benchmark's 3D-asset sections (``decode``, ``render``) at tiny sizes: each adds one timed, compiled
row per case to the report."""
from pathlib import Path

import numpy as np

from conversion.trellis import load_checkpoint
from mdt_jax.bench import assets_bench
from mdt_jax.bench.gaussian_asset import shell_voxels, sphere_shell_asset
from mdt_jax.bench.measure import Report

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_shell_voxels_are_distinct_and_nearest_the_sphere():
  """300 distinct voxels of 16^3, none farther from the sphere of radius 0.4 x 16 than any voxel left out."""
  voxels = shell_voxels(300, 16)
  chosen = {tuple(v) for v in voxels}
  rest = np.array([v for v in np.indices((16,) * 3).reshape(3, -1).T if tuple(v) not in chosen])
  distance = lambda v: np.abs(np.linalg.norm(v + 0.5 - 8, axis=1) - 0.4 * 16)
  assert voxels.shape == (300, 3) and len(chosen) == 300
  assert distance(voxels).max() <= distance(rest).min()


def test_assets_bench_decode_and_render_sections_report_timed_rows():
  report = Report()
  model, params = load_checkpoint(FIXTURES / "eval_assets/gs_dec_16")
  decode = assets_bench.decode_section(report, model, params, num_voxels=200, repeats=1)
  asset = sphere_shell_asset(num_voxels=200, per_voxel=4, resolution=16)
  renders = assets_bench.render_section(report, asset, resolution=32, view_counts=(1, 2), repeats=1)
  assert [(r.section, r.case) for r in report.results] == [
      ("decode", "SLatGaussianDecoder 200 voxels"), ("render", "800 Gaussians 32x32 x1 view"),
      ("render", "800 Gaussians 32x32 x2 views")]
  assert report.results == [decode, *renders]
  assert all(r.seconds > 0 and r.compile_s > 0 and np.isfinite(r.seconds) for r in report.results)
  assert "tile pairs" in renders[0].notes and "M params" in decode.notes
