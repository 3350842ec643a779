"""Converts an orbax directory written by ``trellis_to_flax`` (or training) back to TRELLIS format.

    python -m conversion.flax_to_trellis --src out/ss_flow --dst path/to/ss_flow_roundtrip
"""
from absl import app, flags

from conversion.flax_io import load_flax_checkpoint
from conversion.trellis import save_checkpoint

_SRC = flags.DEFINE_string("src", None, "Orbax checkpoint directory (params + config).", required=True)
_DST = flags.DEFINE_string("dst", None, "Output TRELLIS checkpoint stem.", required=True)


def main(argv):
  del argv
  model, params = load_flax_checkpoint(_SRC.value)
  save_checkpoint(_DST.value, model, params)
  print(f"wrote {_DST.value}.json and {_DST.value}.safetensors")


if __name__ == "__main__":
  app.run(main)
