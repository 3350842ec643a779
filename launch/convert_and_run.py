"""End-to-end check of a TRELLIS checkpoint: convert to Flax (orbax), reload, run, convert back
(mdt_jax/eval/round_trip.py).

    python launch/convert_and_run.py --workdir=/tmp/mdt_convert

Defaults to the tiny TRELLIS sparse-structure flow shipped in tests/fixtures/trellis, whose
``.io.npz`` holds the upstream PyTorch output: the script prints our max error against it.
"""
from pathlib import Path

from absl import flags

from mdt_jax import cli
from mdt_jax.eval.round_trip import round_trip

_REPO = Path(__file__).resolve().parents[1]
_CHECKPOINT = flags.DEFINE_string("checkpoint", str(_REPO / "tests/fixtures/trellis/ss_flow"),
                                  "TRELLIS checkpoint stem (NAME.json + NAME.safetensors).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the converted checkpoints go.", required=True)


def main(argv):
  del argv
  round_trip(Path(_CHECKPOINT.value), Path(_WORKDIR.value), log=print)


if __name__ == "__main__":
  cli.run(main)
