"""Converts a TRELLIS checkpoint (STEM.json + STEM.safetensors) into an orbax directory.

    python -m conversion.trellis_to_flax --src path/to/ss_flow_img_dit_L_16l8_fp16 --dst out/ss_flow
"""
from absl import app, flags

from conversion.flax_io import save_flax_checkpoint
from conversion.trellis import load_checkpoint

_SRC = flags.DEFINE_string("src", None, "TRELLIS checkpoint stem (without .json/.safetensors).", required=True)
_DST = flags.DEFINE_string("dst", None, "Output orbax checkpoint directory (must not exist).", required=True)


def main(argv):
  del argv
  model, params = load_checkpoint(_SRC.value)
  save_flax_checkpoint(_DST.value, model, params)
  print(f"wrote {_DST.value} ({type(model).__name__})")


if __name__ == "__main__":
  app.run(main)
