"""Converts a TRELLIS checkpoint (STEM.json + STEM.safetensors) into an orbax directory.

    python -m conversion.trellis_to_flax --src path/to/ss_flow_img_dit_L_16l8_fp16 --dst out/ss_flow
"""
from pathlib import Path

from absl import flags

from conversion.trellis import load_checkpoint, save_flax_checkpoint
from mdt_jax import cli

_SRC = flags.DEFINE_string("src", None, "TRELLIS checkpoint stem (without .json/.safetensors).", required=True)
_DST = flags.DEFINE_string("dst", None, "Output orbax checkpoint directory (must not exist, unless --overwrite).",
                           required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an existing --dst (once the new one is complete).")


def main(argv):
  del argv
  if Path(_DST.value).exists() and not _OVERWRITE.value:
    raise FileExistsError(f"{_DST.value} exists; refusing to overwrite it (--overwrite replaces it)")
  model, params = load_checkpoint(_SRC.value)
  save_flax_checkpoint(_DST.value, model, params, overwrite=_OVERWRITE.value)
  print(f"wrote {_DST.value} ({type(model).__name__})")


if __name__ == "__main__":
  cli.run(main)
