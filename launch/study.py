"""The toy benchmark study (docs/toy_benchmark.md): MDT-dist VM+VD and VM only, three du/dt scalings,
CM and naive Euler, and a few tries, for both stages, over training seeds and checkpoints.

    python launch/study.py --workdir=/tmp/mdt_study                    # both stages, then the report
    python launch/study.py --workdir=/tmp/mdt_study --stages=ss        # one stage (run two at once on 2+ cores)
    python launch/study.py --workdir=/tmp/mdt_study --stages=          # only (re)write the report
    python launch/study.py --workdir=/tmp/mdt_study --stages=ss --arms=vm,cm   # some arms only
    python launch/study.py --workdir=/tmp/mdt_study_quick --quick      # a few steps of two arms

The grid and budget are in mdt_jax/demo/study.py. Every run and score is stored as it finishes, so
rerunning the same command resumes. Writes <workdir>/study.md with its tables and figures.
"""
import dataclasses
import os
import sys
from pathlib import Path

import logging as std_logging

import jax
from absl import app, flags, logging

from configs import distill
from mdt_jax import cli, stages

_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory (runs, results, study.md).", required=True)
_STAGES = flags.DEFINE_list("stages", ["ss", "slat"], "Stages to run (ss, slat); empty: only write the report.")
_ARMS = flags.DEFINE_list("arms", [], "Only these arms (names in mdt_jax/demo/study.py:arms); empty: the plan's.")
_QUICK = flags.DEFINE_bool("quick", False, "A few steps of two arms on small sets (the numbers mean nothing).")
_TEACHER_SS = flags.DEFINE_string("teacher_ss", distill.TOY_TEACHERS["ss_toy"], "Stage-1 teacher (TRELLIS stem).")
_TEACHER_SLAT = flags.DEFINE_string("teacher_slat", distill.TOY_TEACHERS["slat_toy"], "Stage-2 teacher (TRELLIS stem).")


def main(argv):
  del argv
  workdir = Path(_WORKDIR.value)
  workdir.mkdir(parents=True, exist_ok=True)
  if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    jax.config.update("jax_compilation_cache_dir", str(workdir / "jax_cache"))
  logging.set_verbosity(logging.WARNING)
  std_logging.getLogger("absl").setLevel(std_logging.WARNING)
  from mdt_jax.demo import study
  unknown = set(_STAGES.value) - set(stages.NAMES)
  if unknown:
    raise app.UsageError(f"--stages: unknown stage(s) {sorted(unknown)}; known: ss, slat")
  plan = study.quick_plan() if _QUICK.value else study.default_plan()
  if _ARMS.value:
    known = {a.name for stage in stages.STAGES for a in study.arms(stage)}
    if set(_ARMS.value) - known:
      raise app.UsageError(f"--arms: unknown arm(s) {sorted(set(_ARMS.value) - known)}; known: {sorted(known)}")
    plan = dataclasses.replace(plan, arm_names=tuple(_ARMS.value))
  teachers = {"ss": _TEACHER_SS.value, "slat": _TEACHER_SLAT.value}
  for stage, stem in teachers.items():
    if not Path(f"{stem}.json").is_file():
      raise app.UsageError(f"the {stage} teacher {stem}.json does not exist (--teacher_{stage})")
  report = study.run_study(workdir, plan, teachers=teachers, stage_names=_STAGES.value, command=" ".join(sys.argv),
                           base_configs={stage: distill.get_config(f"{stage}_toy") for stage in _STAGES.value})
  print(f"report: {report}")


if __name__ == "__main__":
  cli.run(main)
