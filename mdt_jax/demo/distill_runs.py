"""The demo's distillation runs: each stage's student with MDT-dist and with the CM baseline.

Every run is `mdt_jax.train.loop.train(config, <workdir>/runs/<stage>_<student>)` in this process,
on the same step budget per stage; the toy variant's config (`configs/distill.py:<stage>_toy`) is
used as it is, except for the objective, the teacher, the step budget, the logging interval, the
data location and the fields the plan overrides (`DemoPlan.distill_overrides`, with their
reasons). A run resumes from its workdir; `demo_run.json` beside it records the wall time of the
call that finished it, and a finished run is skipped (a larger step budget extends it).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from mdt_jax.demo.plan import STUDENTS

RECORD = "demo_run.json"


def run_dir(workdir: Path, stage: str, student: str) -> Path:
  return Path(workdir) / "runs" / f"{stage}_{student}"


def run_config(base, objective: str, *, teacher: str, steps: int, overrides: dict, data_dir: str,
               toy_num_train: int):
  """A copy of `base` (the stage's toy distillation config) for `objective`, with the config fields
  in `overrides` set."""
  config = base.copy_and_resolve_references()
  config.update(overrides)
  config.objective = objective
  config.teacher_checkpoint = str(teacher)
  config.total_steps = int(steps)
  config.log_every = max(1, steps // 30)          # ~30 points on the training curves
  config.snapshot_steps = ()                      # the demo samples and renders the students itself
  config.data.data_dir = str(data_dir)            # one toy dataset for every run
  config.data.toy_num_train = int(toy_num_train)
  return config


def _latest_checkpoint(directory: Path) -> int:
  steps = [int(p.name) for p in (directory / "checkpoints").glob("*") if p.name.isdigit()]
  return max(steps, default=0)


def stored(workdir: Path, stage: str, student: str, *, teacher_digest: str, steps: int) -> dict | None:
  """The record of a finished run of `steps` steps from these teacher weights, or None."""
  return stored_in(run_dir(workdir, stage, student), teacher_digest=teacher_digest, steps=steps)


def stored_in(directory: Path, *, teacher_digest: str, steps: int) -> dict | None:
  """The record of a finished run of `steps` steps from these teacher weights in `directory`, or None."""
  path = Path(directory) / RECORD
  if not path.exists():
    return None
  record = json.loads(path.read_text())
  return record if record["steps"] == steps and record["teacher_digest"] == teacher_digest else None


def distill(base, student: str, workdir: Path, *, teacher: str, teacher_digest: str, steps: int,
            overrides: dict, toy_num_train: int) -> dict:
  """Runs (or resumes, or extends) the demo's distillation of `student` (a key of STUDENTS) in
  `run_dir(workdir, ...)`; -> its record (see `distill_into`)."""
  config = run_config(base, STUDENTS[student], teacher=teacher, steps=steps, overrides=overrides,
                      data_dir=str(Path(workdir) / "tfds"), toy_num_train=toy_num_train)
  return distill_into(run_dir(workdir, base.stage, student), config, student=student, teacher_digest=teacher_digest)


def distill_into(directory: Path, config, *, student: str, teacher_digest: str) -> dict:
  """Runs (or resumes, or extends) `config`'s distillation in `directory`; -> its record (`RECORD`).

  The record: `stage`, `student`, `objective`, `steps`, `batch_size`, `wall_s` (seconds of the call
  that finished the run, compilation and data preparation included), `resumed_from` (the training
  step that call started from), `export` (the first EMA's TRELLIS stem), `teacher` and
  `teacher_digest`. A run directory belongs to one teacher's weights (`demo_teacher.json`) and
  never shrinks: another teacher or fewer steps is an error naming the directory.
  """
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  teacher, steps = config.teacher_checkpoint, config.total_steps
  owner = directory / "demo_teacher.json"
  if owner.exists() and json.loads(owner.read_text())["digest"] != teacher_digest:
    raise ValueError(f"{directory} was distilled from other weights than {teacher}: use another workdir")
  owner.write_text(json.dumps({"teacher": str(teacher), "digest": teacher_digest}))
  record_path = directory / RECORD
  if record_path.exists():
    record = json.loads(record_path.read_text())
    if record["steps"] > steps:
      raise ValueError(f"{directory} holds a run of {record['steps']} steps, more than the {steps} asked for: "
                       f"use another workdir")
  from mdt_jax.train.loop import train  # imports orbax and the training stack only when training
  resumed_from = _latest_checkpoint(directory)
  start = time.perf_counter()
  train(config, directory)
  record = {"stage": config.stage, "student": student, "objective": config.objective, "steps": steps,
            "batch_size": config.batch_size_per_device, "batch_split": config.batch_split, "teacher": str(teacher),
            "teacher_digest": teacher_digest,
            "wall_s": time.perf_counter() - start, "resumed_from": resumed_from,
            "export": str(directory / "export" / f"student_ema{config.ema_rates[0]}")}
  record_path.write_text(json.dumps(record, indent=2))
  return record


def training_curve(directory: Path) -> dict:
  """metrics.jsonl of a run -> {metric name: ([steps], [values])} for its scalar losses."""
  curves = {}
  for line in (Path(directory) / "metrics.jsonl").read_text().splitlines():
    row = json.loads(line)
    for key, value in row.items():
      if key.startswith("loss") and isinstance(value, (int, float)):
        curves.setdefault(key, ([], []))
        curves[key][0].append(row["step"])
        curves[key][1].append(value)
  return curves
