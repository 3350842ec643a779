"""The demo's PNG figures: quality against sampling steps, training curves, and sample renders.

Renders show voxels as square markers from one view (elevation 20, azimuth 30). Stage-1 shapes are
coloured by height; stage-2 and pipeline shapes by their generated colour channels (toy_features
channels 5-7, the family's colour, mapped back to RGB and clipped to [0, 1]), so a wrong colour or
a speckled shape is a visible stage-2 error.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib import colormaps, pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mdt_jax.data.toy_features import FAMILY_COLOURS  # noqa: E402

VIEW = (20.0, 30.0)  # elevation, azimuth in degrees


def feature_rgb(feats: np.ndarray) -> np.ndarray:
  """Generated toy features [n, 8] -> RGB [n, 3] in [0, 1] from the colour channels 5-7."""
  return np.clip(feats[:, 5:8] * FAMILY_COLOURS.std(0) + FAMILY_COLOURS.mean(0), 0.0, 1.0)


def height_rgb(coords: np.ndarray, resolution: int) -> np.ndarray:
  return colormaps["viridis"]((coords[:, 2] + 0.5) / resolution)[:, :3]


def render_grid(path: Path, rows: list[tuple[str, list[tuple[np.ndarray, np.ndarray]]]], resolution: int,
                title: str, cell_inches: float = 1.7):
  """rows: (label, [(voxels [n, 3], rgb [n, 3]) per column]) -> one PNG, a row per method."""
  columns = max(len(cells) for _, cells in rows)
  fig = plt.figure(figsize=(cell_inches * columns + 2.2, cell_inches * len(rows) + 0.5))
  marker = max(0.5, (cell_inches * 72 / resolution) ** 2 * 0.3)
  for r, (label, cells) in enumerate(rows):
    for c, (voxels, rgb) in enumerate(cells):
      ax = fig.add_subplot(len(rows), columns, r * columns + c + 1, projection="3d")
      if len(voxels):
        ax.scatter(voxels[:, 0], voxels[:, 1], voxels[:, 2], c=rgb, marker="s", s=marker, linewidths=0)
      ax.set(xlim=(0, resolution), ylim=(0, resolution), zlim=(0, resolution), xticks=[], yticks=[], zticks=[])
      ax.set_box_aspect((1, 1, 1))
      ax.view_init(*VIEW)
      if c == 0:
        ax.text2D(-0.35, 0.5, label, transform=ax.transAxes, fontsize=7, ha="right", va="center")
  fig.suptitle(title, fontsize=10)
  fig.subplots_adjust(left=2.2 / (cell_inches * columns + 2.2), right=0.99, top=0.95, bottom=0.01,
                      wspace=0.02, hspace=0.02)
  fig.savefig(path, dpi=90)
  plt.close(fig)


def quality_vs_steps(path: Path, panels: list[dict]):
  """panels: {"title", "ylabel", "series": {label: ([steps], [values])}, "lines": {label: value}}
  -> one PNG, a panel each: the few-step samplers as lines, the references as horizontal lines."""
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
  for ax, panel in zip(axes[0], panels):
    for label, (steps, values) in panel["series"].items():
      ax.plot(steps, values, "o-", label=label)
    for i, (label, value) in enumerate(panel["lines"].items()):
      ax.axhline(value, color=f"C{len(panel['series']) + i}", linestyle="--", linewidth=1, label=label)
    ax.set(xscale="log", xlabel="sampling steps", ylabel=panel["ylabel"], title=panel["title"])
    ax.set_xticks([1, 2, 4, 25], labels=["1", "2", "4", "25"])
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def training_curves(path: Path, runs: dict):
  """runs: {run name: {metric: ([steps], [values])}} -> one PNG, a panel per run (log loss)."""
  fig, axes = plt.subplots(1, len(runs), figsize=(4.0 * len(runs), 3.2), squeeze=False)
  for ax, (name, curves) in zip(axes[0], runs.items()):
    for metric, (steps, values) in curves.items():
      if any(values):
        ax.plot(steps, values, label=metric)
    ax.set(yscale="log", xlabel="training step", title=name)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def guidance_and_steps(path: Path, by_w: dict, by_steps: dict, best: dict, reference: dict):
  """A teacher's quality against the guidance weight and the number of Euler steps -> one PNG.

  by_w: {w: row} at 25 steps; by_steps: {w: {steps: row}}; a row holds "stage1" (1nna, fidelity),
  "stage2" and "pipeline_stage2" (fd) metrics; best: {"ss": w, "slat": w}; reference: the real rows
  ("second_real", "stage2_real") drawn as dashed lines.
  """
  fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.6))
  weights = list(by_w)
  stage1 = {"fidelity": "family fidelity (higher is better)", "1nna": "1-NNA (0.5 ideal)"}
  for key, label in stage1.items():
    axes[0, 0].plot(weights, [by_w[w]["stage1"][key] for w in weights], "o-", label=label)
    axes[0, 0].axhline(reference["second_real"][key], color="grey", linestyle="--", linewidth=1)
  axes[0, 1].plot(weights, [by_w[w]["stage2"]["fd"] for w in weights], "o-", label="FD, real structures")
  axes[0, 1].plot(weights, [by_w[w]["pipeline_stage2"]["fd"] for w in weights], "o-", label="FD, own stage-1 samples")
  axes[0, 1].axhline(reference["stage2_real"]["fd"], color="grey", linestyle="--", linewidth=1, label="second real set")
  for w, per in by_steps.items():
    steps = list(per)
    for key, label in stage1.items():
      axes[1, 0].plot(steps, [per[k]["stage1"][key] for k in steps], "o-", label=f"{label}, w = {w:g}")
    axes[1, 1].plot(steps, [per[k]["stage2"]["fd"] for k in steps], "o-", label=f"FD, real structures, w = {w:g}")
  axes[1, 1].axhline(reference["stage2_real"]["fd"], color="grey", linestyle="--", linewidth=1, label="second real set")
  axes[0, 0].set(xlabel="guidance weight w (25 steps)", title=f"stage 1 (best w = {best['ss']:g})")
  axes[0, 1].set(xlabel="guidance weight w (25 steps)", ylabel="FD", title=f"stage 2 (best w = {best['slat']:g})")
  for ax, title in ((axes[1, 0], "stage 1"), (axes[1, 1], "stage 2")):
    steps = sorted({k for per in by_steps.values() for k in per})
    ax.set(xscale="log", xlabel="Euler steps", title=title)
    ax.set_xticks(steps, labels=[str(k) for k in steps])
  axes[1, 1].set(ylabel="FD")
  for ax in axes.flat:
    ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)
