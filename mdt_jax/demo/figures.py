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
