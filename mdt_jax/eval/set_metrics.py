"""Two-sample set metrics on a precomputed distance (here 1 - IoU): 1-NNA, coverage, MMD.

For a generated set G (n_g shapes) and a reference set R (n_r shapes) of one condition:
  1-NNA  1-nearest-neighbour two-sample accuracy (Lopez-Paz & Oquab; PointFlow). Every shape of
         G u R is classified by its nearest other shape; the score is the fraction classified
         correctly. A shape x scores 1 when the nearest distance within its own set (x itself
         excluded) is below the nearest distance to the other set, 0 when above, and 1/2 on an exact
         tie (a shape alone in its set has no own-set neighbour and scores 0).
         Reading: 0.5 is ideal in the limit; with finite sets, exchangeable samples of one
         distribution score `exchangeable_1nna(n_g, n_r)` in expectation (0.484 for 16 vs 16, no
         ties), the floor a second real set reaches. Above it, lower is better (1 = G and R fully
         separable). Well below it means G is closer to R than independent real data would be:
         it copies R's shapes (an exact copy of R scores 0), which a generator that never saw the
         held-out R cannot do except by chance.
  COV    coverage: the fraction of R that is the nearest reference (ties: lowest index) of at least
         one shape of G. Higher is better; 1 is the maximum.
  MMD    minimum matching distance: the mean over R of the distance to the nearest shape of G.
         Lower is better, 0 when every reference shape is in G. It rewards blurry mean shapes
         (it never penalises generated shapes that match nothing), so read 1-NNA and COV first.
"""
import numpy as np


def _check(d_gg, d_rr, d_gr):
  d_gg, d_rr, d_gr = (np.asarray(d, np.float64) for d in (d_gg, d_rr, d_gr))
  n_g, n_r = d_gr.shape
  if d_gg.shape != (n_g, n_g) or d_rr.shape != (n_r, n_r) or not (n_g and n_r):
    raise ValueError(f"expected d_gg [n_g, n_g], d_rr [n_r, n_r], d_gr [n_g, n_r] with n_g, n_r >= 1, "
                     f"got {d_gg.shape}, {d_rr.shape}, {d_gr.shape}")
  return d_gg, d_rr, d_gr


def _nearest_other_member(d):
  """Row-wise minimum of a square distance matrix with the diagonal left out: [n] (inf when n = 1)."""
  return np.where(np.eye(len(d), dtype=bool), np.inf, d).min(1)


def one_nna(d_gg, d_rr, d_gr):
  """1-NN accuracy (module docstring) in [0, 1].

  Args: distances float [n_g, n_g] within G, [n_r, n_r] within R, [n_g, n_r] from G to R.
  """
  d_gg, d_rr, d_gr = _check(d_gg, d_rr, d_gr)
  own = np.concatenate([_nearest_other_member(d_gg), _nearest_other_member(d_rr)])
  other = np.concatenate([d_gr.min(1), d_gr.min(0)])
  return float(np.mean(np.where(own < other, 1.0, np.where(own == other, 0.5, 0.0))))


def exchangeable_1nna(n_generated, n_reference):
  """Expected 1-NNA of two sets whose shapes are exchangeable (one distribution) without ties.

  The nearest of x's n_g + n_r - 1 companions is equally likely to be any of them, so a shape of G
  is right with probability (n_g - 1) / (n_g + n_r - 1), one of R with (n_r - 1) / (n_g + n_r - 1).
  """
  n = n_generated + n_reference
  return (n_generated * (n_generated - 1) + n_reference * (n_reference - 1)) / (n * (n - 1))


def coverage(d_gr):
  """Fraction of reference shapes that are some generated shape's nearest (ties: lowest index).

  Args: d_gr float [n_g, n_r], distances from G to R.
  """
  d_gr = np.asarray(d_gr, np.float64)
  return len(np.unique(d_gr.argmin(1))) / d_gr.shape[1]


def minimum_matching_distance(d_gr):
  """Mean over reference shapes of the distance to the nearest generated shape.

  Args: d_gr float [n_g, n_r], distances from G to R.
  """
  return float(np.asarray(d_gr, np.float64).min(0).mean())
