"""Converts an orbax directory written by ``trellis_to_flax`` (or training) back to TRELLIS format.

    python -m conversion.flax_to_trellis --src out/ss_flow --dst path/to/ss_flow_roundtrip
"""
from pathlib import Path

from absl import flags

from conversion.trellis import load_flax_checkpoint, save_checkpoint
from mdt_jax import cli

_SRC = flags.DEFINE_string("src", None, "Orbax checkpoint directory (params + config).", required=True)
_DST = flags.DEFINE_string("dst", None, "Output TRELLIS checkpoint stem (STEM.json and STEM.safetensors must not "
                           "exist, unless --overwrite).", required=True)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing files (each atomically, once written).")


def main(argv):
  del argv
  existing = [p for p in (f"{_DST.value}.json", f"{_DST.value}.safetensors") if Path(p).exists()]
  if existing and not _OVERWRITE.value:
    raise FileExistsError(f"{' and '.join(existing)} {'exist' if len(existing) > 1 else 'exists'}; refusing to "
                          f"overwrite (--overwrite replaces them)")
  model, params = load_flax_checkpoint(_SRC.value)
  save_checkpoint(_DST.value, model, params)
  print(f"wrote {_DST.value}.json and {_DST.value}.safetensors")


if __name__ == "__main__":
  cli.run(main)
