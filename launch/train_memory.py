"""Per-device memory of the published train steps on a many-device mesh, compiled ahead of time on CPU
(mdt_jax/bench/train_memory.py says what each figure counts and how far to trust it).

    python launch/train_memory.py --devices=32 --variants=ss_flow_L,slat_flow_L --meshes=data,fsdp
    python launch/benchmark.py --only=train_memory      # the same, as a benchmark section

Forces ``--devices`` CPU devices and prints two figures per variant and mesh: the estimate and, unless
``--noxla_plan``, XLA:CPU's plan of the whole step (minutes).
"""
import os
import sys

# The forced device count must be set before jax is imported: read --devices from the command line.
_DEVICES_ARG = next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--devices=")), "32")
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_DEVICES_ARG}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
from absl import flags

from configs import distill
from mdt_jax import cli
from mdt_jax.bench.train_memory import train_memory

_DEVICES = flags.DEFINE_integer("devices", 32, "Forced CPU devices (the mesh size; write --devices=N).")
_VARIANTS = flags.DEFINE_list("variants", ["ss_flow_L", "slat_flow_L"], "configs/distill.py variants.")
_MESHES = flags.DEFINE_list("meshes", ["data", "fsdp"], "data: the default mesh; fsdp: (devices/8, 8).")
_SLAT_VOXELS = flags.DEFINE_integer("slat_voxels", 20_000, "Voxels per SLat instance (TRELLIS keeps "
                                    "instances of at most 32,768).")

_ATTENTION = flags.DEFINE_enum("attention", "flash", ["flash", "compiled"], "flash: a stand-in with a flash "
                               "kernel's memory (mdt_jax/bench/train_memory.py); compiled: the CPU's own attention.")

_XLA_PLAN = flags.DEFINE_bool("xla_plan", True, "Also compile the whole step for XLA:CPU's plan (minutes).")


def main(argv):
  del argv
  if jax.device_count() != _DEVICES.value:
    raise SystemExit(f"needs {_DEVICES.value} devices, got {jax.device_count()} (write --devices=N)")
  train_memory({variant: distill.get_config(variant) for variant in _VARIANTS.value}, _MESHES.value,
               attention=_ATTENTION.value, slat_voxels=_SLAT_VOXELS.value, xla_plan=_XLA_PLAN.value,
               log=lambda line: print(line, flush=True))


if __name__ == "__main__":
  cli.run(main)
