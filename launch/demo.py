"""The toy benchmark demo: distill both shipped toy teachers with MDT-dist and the CM baseline, then
compare them with the teacher and naive Euler and write a report.

    python launch/demo.py --workdir=/tmp/mdt_demo            # the default budget (mdt_jax/demo/plan.py)
    python launch/demo.py --workdir=/tmp/mdt_demo_quick --quick   # a few steps of everything (CI)

Writes <workdir>/report.md, PNG figures and renders, samples/*.npz and results/*.json; rerunning in
the same workdir resumes the distillation runs and skips every stored result. Compiled programs are
cached in <workdir>/jax_cache unless JAX_COMPILATION_CACHE_DIR is set.
"""
import os
import sys
from pathlib import Path

import logging as std_logging

import jax
from absl import app, flags, logging

from configs import distill
from mdt_jax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (runs, results, samples, report.md).")
_QUICK = flags.DEFINE_bool("quick", False, "A few steps of everything on small sets (CI; the numbers mean nothing).")
_TEACHER_SS = flags.DEFINE_string("teacher_ss", distill.TOY_TEACHERS["ss_toy"], "Stage-1 teacher (TRELLIS stem).")
_TEACHER_SLAT = flags.DEFINE_string("teacher_slat", distill.TOY_TEACHERS["slat_toy"], "Stage-2 teacher (TRELLIS stem).")


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required")
  workdir = Path(_WORKDIR.value)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
  logging.set_verbosity(logging.WARNING)  # the demo prints its own progress
  std_logging.getLogger("absl").setLevel(std_logging.WARNING)
  from mdt_jax.demo import plan, run
  teachers = {"ss": _TEACHER_SS.value, "slat": _TEACHER_SLAT.value}
  for stage, stem in teachers.items():
    if not Path(f"{stem}.json").is_file():
      raise app.UsageError(f"the {stage} teacher {stem}.json does not exist (--teacher_{stage})")
  report = run.run_demo(workdir, plan.quick_plan() if _QUICK.value else plan.default_plan(), teachers=teachers,
                        distill_configs={stage: distill.get_config(f"{stage}_toy") for stage in ("ss", "slat")},
                        command=" ".join(sys.argv))
  print(f"report: {report}")


if __name__ == "__main__":
  cli.run(main)
