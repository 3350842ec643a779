"""The MDT-dist paper's evaluation of 3D assets: generate, decode to Gaussians, render 4 views, FD_dinov2
and KD_dinov2 against a reference (``mdt_jax.eval.asset_evaluation``; settings: ``configs/evaluate_assets.py``).

    python launch/evaluate_assets.py --config=configs/evaluate_assets.py:tiny --out=/tmp/eval_tiny

Writes ``OUT/metrics.json``, ``OUT/report.md`` and ``OUT/renders/<row>/<asset>/<view>.png``; run it again
with the same ``--out`` to resume an interrupted evaluation (finished assets are not generated again).
"""
from pathlib import Path

from absl import flags
from ml_collections import config_flags

from mdt_jax import cli
from mdt_jax.eval.asset_evaluation import evaluate_assets

_REPO = Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(_REPO / "configs/evaluate_assets.py") + ":tiny",
                                          "Evaluation config.")
_OUT = flags.DEFINE_string("out", None, "Output directory (resumed if it holds an evaluation).", required=True)


def main(argv):
  del argv
  evaluate_assets(_CONFIG.value, _OUT.value)


if __name__ == "__main__":
  cli.run(main)
