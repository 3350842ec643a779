"""Stage-2 (structured latent) evaluation as distributions: generated feature sets against real ones.

The toy's colour channels carry a random per-shape colour gradient (data.toy_features), so the
features given a structure and a condition are a distribution, and an exact error (eval.stage2)
rewards predicting its mean. Here each shape is summarised by a descriptor and the two sets of
descriptors are compared:

  descriptor (DESCRIPTOR_NAMES, 19 values per shape): the colour channels regressed on
  [1, z(p)] (z: the voxel's normalised position, toy_features.normalised_positions), giving the
  intercept (3, the mean colour: the family), the length of each colour channel's slope vector (3,
  rotation-invariant: the gradient's strength; 0 for the mean prediction) and the residual RMS (3,
  0 for real data, whose colour is exactly linear in z); and the mean and standard deviation over
  the voxels of each structure channel 0-4 (10).
  fd     Frechet distance between Gaussians fitted to the two sets of descriptors:
         ||mu_g - mu_r||^2 + tr(S_g + S_r - 2 (S_g S_r)^1/2). Every descriptor value is in the feature
         units (each channel of unit variance over the data), so no dimension is rescaled, and a
         method's value does not depend on the others'. 0 for identical sets; lower is better; read
         it against a second real set's value at the same set sizes: like every FD it is biased
         upward on small sets (two real sets of the toy: 0.67 at 32 shapes, 0.03 at 384).
  1-NNA  eval.set_metrics.one_nna on Euclidean distances of the same descriptors.
Empty shapes (no voxels) have no descriptor and are left out (`num_empty`).
"""
import numpy as np

from mdt_jax.data.toy_features import COLOUR_CHANNELS, normalised_positions
from mdt_jax.eval import set_metrics
from mdt_jax.eval.feature_distances import frechet_distance

_STRUCTURE_CHANNELS = (0, 1, 2, 3, 4)
DESCRIPTOR_NAMES = (*(f"colour_mean_{c}" for c in "rgb"), *(f"colour_slope_{c}" for c in "rgb"),
                    *(f"colour_residual_{c}" for c in "rgb"),
                    *(f"{s}_{k}" for s in ("mean", "std") for k in _STRUCTURE_CHANNELS))


def shape_descriptor(coords, feats):
  """Descriptor of one shape: float64 [19] (DESCRIPTOR_NAMES).

  Args: coords int [n, 3] (x, y, z), n >= 1; feats float [n, 8] aligned with coords.
  """
  z = normalised_positions(coords)
  colour = np.asarray(feats, np.float64)[:, COLOUR_CHANNELS]
  design = np.concatenate([np.ones((len(z), 1)), z], 1)
  beta = np.linalg.lstsq(design, colour, rcond=None)[0]                  # [4, 3]: intercept; slope rows
  residual = np.sqrt(((colour - design @ beta) ** 2).mean(0))
  structure = np.asarray(feats, np.float64)[:, _STRUCTURE_CHANNELS]
  return np.concatenate([beta[0], np.linalg.norm(beta[1:], axis=0), residual,
                         structure.mean(0), structure.std(0)])


def descriptors(coords, feats, num_shapes):
  """Descriptors of a packed set: (float64 [B', 19], int [B'] sample index) over the non-empty samples.

  Args: coords int [N, 4] (b, x, y, z), feats float [N, 8], num_shapes B (b in [0, B)).
  """
  coords, feats = np.asarray(coords), np.asarray(feats)
  if coords.ndim != 2 or coords.shape[1] != 4 or feats.ndim != 2 or len(feats) != len(coords):
    raise ValueError(f"expected coords [N, 4] and feats [N, 8], got {coords.shape} and {feats.shape}")
  order = np.argsort(coords[:, 0], kind="stable")
  bounds = np.searchsorted(coords[order, 0], np.arange(num_shapes + 1))
  rows = [order[bounds[b]:bounds[b + 1]] for b in range(num_shapes)]
  kept = np.array([b for b in range(num_shapes) if len(rows[b])], np.int64)
  out = np.stack([shape_descriptor(coords[rows[b], 1:], feats[rows[b]]) for b in kept]) if len(kept) else \
      np.zeros((0, len(DESCRIPTOR_NAMES)))
  return out, kept


def evaluate_stage2_distribution(coords, feats, num_shapes, real_coords, real_feats, real_num_shapes):
  """Generated structured latents against real ones, as sets of shape descriptors.

  Args: the generated set (coords int [N, 4] (b, x, y, z), feats float [N, 8], its number of samples
    B) and the real set in the same layout.
  Returns: dict of floats `fd`, `one_nna`, `one_nna_exchangeable` (the value two sets of one
    distribution of these sizes score), `num_shapes`, `num_empty`, and `descriptor_mean` (a dict
    name -> the generated set's mean descriptor; the real's under `real_descriptor_mean`).
  """
  gen, _ = descriptors(coords, feats, num_shapes)
  real, _ = descriptors(real_coords, real_feats, real_num_shapes)
  if len(gen) < 2 or len(real) < 2:
    raise ValueError(f"need >= 2 non-empty shapes per set, got {len(gen)} generated and {len(real)} real")
  dist = lambda x, y: np.sqrt(((x[:, None] - y[None]) ** 2).sum(-1))
  return {"fd": frechet_distance(gen, real),
          "one_nna": set_metrics.one_nna(dist(gen, gen), dist(real, real), dist(gen, real)),
          "one_nna_exchangeable": set_metrics.exchangeable_1nna(len(gen), len(real)),
          "num_shapes": int(num_shapes), "num_empty": int(num_shapes - len(gen)),
          "descriptor_mean": dict(zip(DESCRIPTOR_NAMES, gen.mean(0).tolist())),
          "real_descriptor_mean": dict(zip(DESCRIPTOR_NAMES, real.mean(0).tolist()))}
