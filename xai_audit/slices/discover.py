"""Hidden-stratification discovery: an error-aware Gaussian mixture on the model's embeddings.

In the spirit of Domino (Eyuboglu et al., ICLR 2022): images are mapped to a low-dimensional
representation (PCA of the embeddings), concatenated with the model's score (so that the
mixture is *error-aware*: component boundaries follow where the model succeeds and fails), and
modelled with scikit-learn's :class:`~sklearn.mixture.GaussianMixture`; the number of
components is chosen by BIC. Each component is a candidate slice whose metrics are compared
with the rest of the data with patient-level bootstrap intervals and a Holm-controlled test.

Three guards keep a model without a hidden failure from producing a significant slice:

* **Sample splitting (selection-bias guard).** Patients are split at random into a discovery
  half and a test half. The mixture, the PCA and the choice of each slice's metric are fitted
  on the discovery half only; every reported number, interval and p-value comes from the test
  half, whose cases played no part in choosing the slices. Testing slices on the data that
  chose them would make nearly every slice "significant" (they were chosen for being bad).
  Sample splitting was preferred to cross-fitting because refitted mixtures do not share
  components, so slices found on different folds could not be pooled.
* **No tautological membership.** Slice membership is decided from the embedding alone (the
  mixture's marginal over the embedding columns), never from the case's own score, and the
  embedding is first residualised (least squares) on the logit of the score and the label.
  Otherwise "the positives with a low score" would be a slice whose sensitivity is low by
  construction, in any model: the score is a function of the embedding, so any region of the
  raw embedding along the decision direction has a worse error rate.
* **Multiple testing and size.** One metric per slice (chosen on the discovery half), a
  one-sided test that the slice is worse than the rest by more than ``min_gap`` (the
  subgroup flags' rule: the harm must clear a tolerance, not merely zero), Holm's step-down
  correction over the slices tested, and a minimum slice size in the test half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import logit, logsumexp
from scipy.stats import multivariate_normal

from ..fairness._common import DIRECTION, METRIC_INDEX
from ..fairness.bootstrap import bootstrap_replicates, make_plan, percentile_interval, plan_metrics

#: Columns of the slice table (the contract other tools rely on come first).
SLICE_COLUMNS = (
    "slice",
    "n",
    "metric",
    "value",
    "rest_value",
    "gap",
    "ci_low",
    "ci_high",
    "significant",
    "p_value",
    "p_adjusted",
    "n_test",
    "n_test_positive",
    "discovery_gap",
    "share",
    "prevalence",
    "mean_score",
    "label",
    "note",
)
#: Metrics a slice may be tested on (higher is better for all three).
DEFAULT_METRICS = ("sensitivity", "specificity", "auroc")
#: Fewest cases of the class a metric needs (positives for sensitivity, ...), per half.
MIN_CLASS = 10


class SliceInputError(ValueError):
    """The inputs of :func:`discover_slices` are inconsistent (the message says how to fix)."""


@dataclass
class SliceDiscovery:
    """What :func:`discover_slices` found.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per slice (see :data:`SLICE_COLUMNS`): ``slice`` (1, 2, ... worst first),
        ``n`` (cases in the slice, both halves), ``metric``, ``value`` and ``rest_value``
        (test half), ``gap`` (value - rest_value), ``ci_low``/``ci_high`` (bootstrap interval
        of the gap), ``significant``, ``p_value`` (one-sided, slice worse than the rest),
        ``p_adjusted`` (Holm), ``n_test``, ``discovery_gap`` (gap on the discovery half, which
        chose the metric), ``share`` (of all cases), ``prevalence``, ``mean_score``, ``label`` (``"0"``/``"1"``: the slice holds only
        negatives/positives; ``"both"`` with ``by_label=False``), ``note``.
    members : pandas.DataFrame
        One row per case: ``row``, ``case_id``, ``slice``, ``responsibility`` (posterior of
        its slice given the embedding), ``half`` (``"discovery"`` or ``"test"``).
    enrichment : pandas.DataFrame
        Recorded attributes over- or under-represented in each slice: ``slice``, ``attribute``,
        ``group``, ``share_slice``, ``share_rest``, ``difference``.
    image_stats : pandas.DataFrame
        Simple image statistics per slice vs the rest: ``slice``, ``statistic``,
        ``mean_slice``, ``mean_rest``, ``effect`` (standardised mean difference).
    settings : dict
        The settings used, the number of components and the BIC of each number tried.
    """

    table: pd.DataFrame
    members: pd.DataFrame
    enrichment: pd.DataFrame = field(default_factory=pd.DataFrame)
    image_stats: pd.DataFrame = field(default_factory=pd.DataFrame)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def significant(self) -> pd.DataFrame:
        """The rows of :attr:`table` whose slice is significantly worse than the rest."""
        return self.table[self.table["significant"].astype(bool)]

    def cases(self, slice_id: int) -> list[str]:
        """Case ids of slice ``slice_id`` (both halves), most typical first."""
        return slice_case_ids(self.members, slice_id)

    def typical(self, slice_id: int, k: int = 8) -> list[str]:
        """The ``k`` cases with the highest responsibility for slice ``slice_id``."""
        return self.cases(slice_id)[:k]


def slice_case_ids(members: pd.DataFrame, slice_id: Any) -> list[str]:
    """Case ids of one slice from a ``members`` table, highest responsibility first."""
    try:
        key = int(str(slice_id).lower().removeprefix("slice").strip())
    except ValueError:
        raise KeyError(f"unknown slice {slice_id!r}; slices are numbered 1, 2, ...") from None
    known = sorted(int(s) for s in pd.unique(members["slice"]))
    if key not in known:
        raise KeyError(f"unknown slice {slice_id!r}; this result has slices {known}")
    sel = members[members["slice"].to_numpy() == key]
    sel = sel.sort_values("responsibility", ascending=False, kind="stable")
    return sel["case_id"].astype(str).tolist()


# ------------------------------------------------------------------------------ inputs
def _as_inputs(
    embeddings: Any, labels: Any, scores: Any, patient_ids: Any, case_ids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise SliceInputError(
            f"embeddings must be a 2-D array (cases x features), got shape {x.shape}; flatten "
            "feature maps first (e.g. average them over space)"
        )
    n = x.shape[0]
    y = np.asarray(labels, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    for name, arr in (("labels", y), ("scores", s)):
        if arr.shape[0] != n:
            raise SliceInputError(f"{name} has {arr.shape[0]} values for {n} embeddings")
    if not np.isin(y, (0.0, 1.0)).all():
        raise SliceInputError("labels must be 0/1 for every case (drop unlabelled cases first)")
    if not np.isfinite(s).all() or s.min() < 0 or s.max() > 1:
        raise SliceInputError("scores must be finite probabilities in [0, 1]")
    if not np.isfinite(x).all():
        raise SliceInputError("embeddings contain NaN or infinite values")
    if patient_ids is None:
        units = np.arange(n)
    else:
        pid = pd.Series(np.asarray(patient_ids, dtype=object).ravel())
        if len(pid) != n:
            raise SliceInputError(f"patient_ids has {len(pid)} values for {n} embeddings")
        # A missing patient id counts as its own patient.
        pid = pid.where(pid.notna(), pd.Series([f"__row{i}" for i in range(n)]))
        units = pd.factorize(pid.astype(str))[0]
    ids = (
        np.array([f"row_{i}" for i in range(n)], dtype=object)
        if case_ids is None
        else np.asarray(case_ids, dtype=object).ravel().astype(str)
    )
    if len(ids) != n:
        raise SliceInputError(f"case_ids has {len(ids)} values for {n} embeddings")
    return x, y.astype(np.int64), s, units, ids


def split_halves(units: np.ndarray, test_fraction: float, seed: int) -> np.ndarray:
    """Boolean test-half mask: whole patients drawn at random into the test half."""
    n_units = int(units.max()) + 1 if units.size else 0
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    in_test = rng.random(n_units) < test_fraction
    return in_test[units]


# ------------------------------------------------------------------------------ features
def _weigh_blocks(x: np.ndarray, blocks: Sequence[int], fit_rows: np.ndarray) -> np.ndarray:
    """Columns standardised on ``fit_rows``; each block scaled to unit total variance."""
    widths = np.asarray(blocks, dtype=np.int64)
    if widths.ndim != 1 or (widths < 1).any() or widths.sum() != x.shape[1]:
        raise SliceInputError(
            f"feature_blocks {list(map(int, np.atleast_1d(widths)))} must be positive widths "
            f"adding up to the {x.shape[1]} embedding columns"
        )
    fit = x[fit_rows].astype(np.float64)
    mu, sd = fit.mean(axis=0), fit.std(axis=0)
    del fit
    # A constant column carries nothing: zero weight, not a division by zero.
    scale = np.where(sd > 0, 1.0 / np.where(sd > 0, sd, 1.0), 0.0)
    scale /= np.sqrt(np.repeat(widths, widths))
    out = np.array(x, dtype=np.float32)
    out -= mu.astype(np.float32)
    out *= scale.astype(np.float32)
    return out


def _residual_pca(
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    fit_rows: np.ndarray,
    n_pca: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> np.ndarray:
    """Embeddings with the score and label regressed out, reduced by PCA and standardised.

    Everything is fitted on ``fit_rows`` (discovery half) and applied to all rows. With
    ``groups`` (a first pass's components, on ``fit_rows``) the slopes are estimated within
    groups: where a group really fails, its lower scores would otherwise tilt the pooled
    slope, and removing that tilt from every case would move the other groups' cases by
    their own score, a spurious slice next to the real one.
    """
    from sklearn.decomposition import PCA

    design = np.column_stack(
        [np.ones(len(s)), logit(np.clip(s, 1e-4, 1 - 1e-4)), y.astype(np.float64)]
    )
    fit_design = design[fit_rows]
    if groups is not None:
        dummies = (groups[:, None] == np.unique(groups)[None, 1:]).astype(np.float64)
        fit_design = np.column_stack([fit_design, dummies])
    xf = x[fit_rows].astype(np.float64)
    coef, *_ = np.linalg.lstsq(fit_design, xf, rcond=None)
    del xf
    # float32 and in place: 100,000 x 512 embeddings take 200 MB, not 400 per copy. The
    # intercept and the score and label slopes are removed; group offsets are kept.
    resid = np.array(x, dtype=np.float32)
    resid -= design.astype(np.float32) @ coef[:3].astype(np.float32)
    k = int(max(1, min(n_pca, x.shape[1], len(fit_rows) - 1)))
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed)
    pca.fit(resid[fit_rows])
    z = pca.transform(resid).astype(np.float64)
    del resid
    mu, sd = z[fit_rows].mean(axis=0), z[fit_rows].std(axis=0)
    z = (z - mu) / np.where(sd > 0, sd, 1.0)
    return _remove_label_directions(z, y, fit_rows, seed)


#: Iterative nullspace projection stops when a classifier predicts the label no better than this
#: AUROC from what is left (or after :data:`MAX_NULL_DIRECTIONS` directions).
NULL_AUROC = 0.6
MAX_NULL_DIRECTIONS = 8


def _remove_label_directions(
    z: np.ndarray, y: np.ndarray, fit_rows: np.ndarray, seed: int
) -> np.ndarray:
    """Project out the directions that predict the label (iterative nullspace projection).

    Removing the score's slope (above) takes out the model's own decision direction, but
    the finding is usually readable from other directions too; a mixture could then still
    form "the images that look positive", whose negatives are false positives by
    construction. As in INLP (Ravfogel et al. 2020), a logistic regression is fitted to the
    label, its direction removed, and so on until the label is no longer linearly readable.
    A hidden factor drawn regardless of the label (a device, a scanner) is not a label
    direction, so it stays.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    yf = y[fit_rows]
    if yf.min() == yf.max():
        return z
    for _ in range(MAX_NULL_DIRECTIONS):
        clf = LogisticRegression(C=1.0, max_iter=200, random_state=seed).fit(z[fit_rows], yf)
        if roc_auc_score(yf, clf.decision_function(z[fit_rows])) < NULL_AUROC:
            break
        w = clf.coef_[0] / np.linalg.norm(clf.coef_[0])
        z = z - np.outer(z @ w, w)
    return z


def _fit_mixture(
    feats: np.ndarray, k_range: Sequence[int], seed: int
) -> tuple[Any, dict[int, float]]:
    """GaussianMixture with the number of components of lowest BIC in ``k_range``."""
    from sklearn.mixture import GaussianMixture

    best, bics = None, {}
    for k in k_range:
        if k > len(feats) // 5:
            break
        if len(bics) >= 3 and min(bics, key=bics.get) <= k - 3:
            break  # BIC rose for two numbers in a row: more components will not win
        gm = GaussianMixture(
            n_components=k,
            covariance_type="full",
            reg_covar=1e-3,
            n_init=1,
            max_iter=200,
            random_state=seed,
        ).fit(feats)
        bics[k] = float(gm.bic(feats))
        if best is None or bics[k] < bics[best.n_components]:
            best = gm
    return best, bics


def marginal_posterior(gm: Any, z: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Posterior of each component given only the first ``z.shape[1]`` columns of its features.

    The marginal of a Gaussian over a subset of its coordinates is the Gaussian with the
    sub-vector of the mean and the sub-block of the covariance, so the score column the
    mixture was fitted with drops out exactly.
    """
    d = z.shape[1]
    k = gm.n_components
    out = np.empty((len(z), k))
    for a in range(0, len(z), chunk):
        block = z[a : a + chunk]
        logp = np.column_stack(
            [
                multivariate_normal(
                    gm.means_[j, :d], gm.covariances_[j, :d, :d], allow_singular=True
                ).logpdf(block)
                for j in range(k)
            ]
        ).reshape(len(block), k)
        logp += np.log(gm.weights_)
        out[a : a + chunk] = np.exp(logp - logsumexp(logp, axis=1, keepdims=True))
    return out


# ------------------------------------------------------------------------------ tests
def _mixture_slices(
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    fit_rows: np.ndarray,
    n_pca: int,
    error_weight: float,
    max_components: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, int, dict[int, float]]:
    """Fit the error-aware mixture on ``fit_rows``; every row's component and responsibility."""
    sc = logit(np.clip(s, 1e-4, 1 - 1e-4))
    sc = (sc - sc[fit_rows].mean()) / (sc[fit_rows].std() or 1.0)

    def features(z: np.ndarray) -> np.ndarray:
        if not error_weight:
            return z[fit_rows]
        return np.column_stack([z[fit_rows], error_weight * sc[fit_rows]])

    z = _residual_pca(x, y, s, fit_rows, n_pca, seed)
    gm, bics = _fit_mixture(features(z), range(1, int(max_components) + 1), seed)
    if gm.n_components > 1:
        # Second pass: score and label slopes re-estimated within the first pass's components
        # (see _residual_pca), then the mixture refitted with the number BIC chose.
        first = marginal_posterior(gm, z[fit_rows]).argmax(axis=1)
        z = _residual_pca(x, y, s, fit_rows, n_pca, seed, groups=first)
        gm, _ = _fit_mixture(features(z), [gm.n_components], seed)
    post = marginal_posterior(gm, z)
    comp = post.argmax(axis=1)
    return comp, post[np.arange(len(comp)), comp], int(gm.n_components), bics


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (hand-written: scipy has only Benjamini-Hochberg)."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    order = np.argsort(p[ok], kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[ok][order]))
    vals = np.empty(m)
    vals[order] = adj
    out[ok] = vals
    return out


def _point(y: np.ndarray, s: np.ndarray, threshold: float) -> np.ndarray:
    plan = make_plan(y, s, np.arange(len(y)), threshold)
    return plan_metrics(plan, np.ones((1, len(y))))[:, 0]


def _defined(metric: str, n_pos: int, n_neg: int) -> bool:
    if metric in ("sensitivity", "fnr"):
        return n_pos >= MIN_CLASS
    if metric in ("specificity", "fpr"):
        return n_neg >= MIN_CLASS
    return n_pos >= MIN_CLASS and n_neg >= MIN_CLASS


def _choose_metric(
    y: np.ndarray, s: np.ndarray, inside: np.ndarray, threshold: float, metrics: Sequence[str]
) -> tuple[str | None, float]:
    """The metric with the worst gap (slice - rest, signed so negative is worse)."""
    if inside.sum() == 0 or (~inside).sum() == 0:
        return None, np.nan
    a, b = _point(y[inside], s[inside], threshold), _point(y[~inside], s[~inside], threshold)
    n_pos, n_neg = int(y[inside].sum()), int((1 - y[inside]).sum())
    best, best_gap = None, np.inf
    for m in metrics:
        if not _defined(m, n_pos, n_neg):
            continue
        gap = DIRECTION[m] * (a[METRIC_INDEX[m]] - b[METRIC_INDEX[m]])
        if np.isfinite(gap) and gap < best_gap:
            best, best_gap = m, gap
    return best, (best_gap if best is not None else np.nan)


# ------------------------------------------------------------------------------ main
def discover_slices(
    embeddings: Any,
    labels: Any,
    scores: Any,
    *,
    threshold: float = 0.5,
    patient_ids: Any = None,
    case_ids: Any = None,
    attributes: pd.DataFrame | None = None,
    image_stats: pd.DataFrame | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    max_components: int = 8,
    n_pca: int = 16,
    error_weight: float = 1.0,
    min_size: int = 30,
    alpha: float = 0.05,
    min_gap: float = 0.05,
    n_boot: int = 1000,
    ci: float = 0.95,
    test_fraction: float = 0.5,
    max_fit: int = 20000,
    by_label: bool = True,
    feature_blocks: Sequence[int] | None = None,
    seed: int = 0,
) -> SliceDiscovery:
    """Find coherent groups of cases where the model does worse than on the rest.

    Parameters
    ----------
    embeddings : array of shape (n, d)
        One vector per case: the model's penultimate features
        (:meth:`~xai_audit.model.ModelAdapter.embed`) or any other image representation
        (e.g. a foundation model's).
    labels : array of shape (n,)
        0/1 ground truth.
    scores : array of shape (n,)
        Model probabilities of the positive class.
    threshold : float, default 0.5
        Operating threshold (``score >= threshold`` is positive); an audit passes its own.
    patient_ids : array of shape (n,), optional
        The split into halves and the bootstrap keep each patient's images together.
    case_ids : array of shape (n,), optional
        Identifiers returned by :meth:`SliceDiscovery.cases` (default ``row_<i>``).
    attributes : pandas.DataFrame, optional
        Recorded attributes (sex, site, ...) for the enrichment table, one row per case.
    image_stats : pandas.DataFrame, optional
        Per-case image statistics (see :func:`xai_audit.slices.image_statistics`).
    metrics : sequence of str, default ("sensitivity", "specificity", "auroc")
        Metrics a slice may be tested on; each slice is tested on the one with the worst gap
        in the discovery half (one test per slice).
    max_components : int, default 8
        The mixture's number of components is chosen by BIC among 1..max_components (1, no
        structure, means no slice).
    n_pca : int, default 16
        PCA components of the residualised embeddings.
    error_weight : float, default 1.0
        Weight of the (standardised) score column in the mixture; 0 gives an error-blind
        mixture of the embeddings alone.
    min_size : int, default 30
        Fewest test-half cases a slice needs to be tested (smaller slices are listed, untested).
    alpha : float, default 0.05
        Family-wise error rate over the slices tested (Holm).
    min_gap : float, default 0.05
        The tolerance: a slice is significant when it is worse than the rest by more than
        this (one-sided test against a gap of ``-min_gap``, Holm-adjusted), as the audit's
        default disparity tolerance.
    n_boot, ci : int, float
        Patient-level bootstrap resamples and interval level.
    test_fraction : float, default 0.5
        Share of patients in the test half.
    max_fit : int, default 20000
        At most this many discovery cases (a seeded sample) fit the PCA and the mixture.
    by_label : bool, default True
        Fit one mixture to the positives and one to the negatives: each slice is then a group
        of positives (tested on sensitivity) or of negatives (specificity). ``False``: one
        mixture over all cases (Domino's setting), whose slices may mix labels.
    feature_blocks : sequence of int, optional
        Widths of consecutive column blocks of ``embeddings`` (e.g. from
        :func:`~xai_audit.slices.stage_embedding`) to be weighted equally: every column is
        standardised on the discovery half and each block scaled to the same total variance,
        so that a wide block does not dominate the PCA. None: the columns are used as given.
    seed : int, default 0

    Returns
    -------
    SliceDiscovery

    Raises
    ------
    SliceInputError
        Inconsistent shapes, labels other than 0/1, scores outside [0, 1], NaN embeddings.
    """
    unknown = [m for m in metrics if m not in METRIC_INDEX or DIRECTION[m] == 0]
    if unknown:
        raise SliceInputError(
            f"metrics {unknown} cannot rank slices; choose from "
            f"{[m for m in METRIC_INDEX if DIRECTION[m] != 0]}"
        )
    if not 0.1 <= test_fraction <= 0.9:
        raise SliceInputError(f"test_fraction must lie in [0.1, 0.9], got {test_fraction}")
    x, y, s, units, ids = _as_inputs(embeddings, labels, scores, patient_ids, case_ids)
    n = len(y)
    settings: dict[str, Any] = {
        "method": "error-aware Gaussian mixture on residualised PCA embeddings (BIC)",
        "selection_guard": "sample splitting by patient: fit on the discovery half, test on "
        "the test half",
        "threshold": float(threshold),
        "metrics": list(metrics),
        "max_components": int(max_components),
        "n_pca": int(n_pca),
        "error_weight": float(error_weight),
        "min_size": int(min_size),
        "alpha": float(alpha),
        "min_gap": float(min_gap),
        "n_boot": int(n_boot),
        "ci": float(ci),
        "test_fraction": float(test_fraction),
        "by_label": bool(by_label),
        "seed": int(seed),
        "n_cases": int(n),
        "embedding_dim": int(x.shape[1]),
    }
    test = split_halves(units, test_fraction, seed)
    disc_rows = np.flatnonzero(~test)
    rng = np.random.default_rng(seed)
    fit_rows = (
        np.sort(rng.choice(disc_rows, max_fit, replace=False))
        if len(disc_rows) > max_fit
        else disc_rows
    )
    settings.update(n_discovery=int(len(disc_rows)), n_test=int(test.sum()))
    if feature_blocks is not None:
        x = _weigh_blocks(x, feature_blocks, fit_rows)
        settings["feature_blocks"] = [int(b) for b in feature_blocks]
        settings["method"] += (
            f"; {len(feature_blocks)} embedding blocks (e.g. penultimate features and each "
            "network stage's channel maxima and means) standardised and weighted equally"
        )
    if len(fit_rows) < 20 or test.sum() < 2 * min_size:
        settings.update(n_components=0, bic={}, status="too few cases to discover slices")
        return _empty(ids, test, settings)

    # One mixture per label (default): a slice is a group of positives (tested on sensitivity)
    # or of negatives (specificity). A mixture over both labels spends its components on the
    # label itself, and "the images that look positive" then has false positives among its
    # negatives by construction.
    groups = [np.flatnonzero(y == c) for c in (0, 1)] if by_label else [np.arange(n)]
    comp = np.zeros(n, np.int64)
    resp = np.ones(n)
    offset, n_comp, all_bics = 0, [], {}
    for g, rows_g in enumerate(groups):
        fit_g = np.flatnonzero(np.isin(rows_g, fit_rows))
        if len(fit_g) < 20:
            comp[rows_g], n_comp = offset, [*n_comp, 1]
            offset += 1
            continue
        c_g, r_g, k_g, bics = _mixture_slices(
            x[rows_g], y[rows_g], s[rows_g], fit_g, n_pca, error_weight, max_components, seed
        )
        comp[rows_g], resp[rows_g] = c_g + offset, r_g
        offset += k_g
        n_comp.append(k_g)
        all_bics[f"label {g}" if by_label else "all"] = {str(k): v for k, v in bics.items()}
    settings.update(n_components=int(offset), components_per_group=n_comp, bic=all_bics)
    if offset <= len(groups):
        settings["status"] = "one component per label (BIC): no structure, no slice"
        return _empty(ids, test, settings)
    n_components = offset

    rows, plans, order = [], [], []
    units_t = pd.factorize(units[test])[0]
    yt, st, ct = y[test], s[test], comp[test]
    yd, sd, cd = y[~test], s[~test], comp[~test]
    for c in range(n_components):
        inside_t = ct == c
        n_c = int((comp == c).sum())
        metric, d_gap = _choose_metric(yd, sd, cd == c, threshold, metrics)
        row = {
            "component": c,
            "n": n_c,
            "n_test": int(inside_t.sum()),
            "n_test_positive": int(yt[inside_t].sum()),
            "metric": metric,
            "discovery_gap": d_gap,
            "share": n_c / n,
            "prevalence": float(y[comp == c].mean()) if n_c else np.nan,
            "mean_score": float(s[comp == c].mean()) if n_c else np.nan,
            # the label of the slice's cases (one mixture per label), "both" otherwise
            "label": str(int(y[comp == c][0])) if by_label and n_c else "both",
            "note": "",
        }
        n_pos, n_neg = int(yt[inside_t].sum()), int((1 - yt[inside_t]).sum())
        if inside_t.sum() < min_size:
            row["note"] = f"too small to test ({int(inside_t.sum())} < {min_size} test cases)"
        elif metric is None or not _defined(metric, n_pos, n_neg):
            row["note"] = "no metric defined (too few positives or negatives)"
        elif (~inside_t).sum() < min_size:
            row["note"] = "the rest is too small to compare with"
        else:
            plans += [
                make_plan(yt[inside_t], st[inside_t], units_t[inside_t], threshold),
                make_plan(yt[~inside_t], st[~inside_t], units_t[~inside_t], threshold),
            ]
            order.append(len(rows))
        rows.append(row)

    if plans:
        n_units = int(units_t.max()) + 1
        reps = bootstrap_replicates([plans], n_units, n_boot, seed)[:, 0]
        ones = np.ones((1, n_units))
        for j, i in enumerate(order):
            m = METRIC_INDEX[rows[i]["metric"]]
            sign = DIRECTION[rows[i]["metric"]]
            a = plan_metrics(plans[2 * j], ones)[m, 0]
            b = plan_metrics(plans[2 * j + 1], ones)[m, 0]
            gaps = reps[:, 2 * j, m] - reps[:, 2 * j + 1, m]
            lo, hi = percentile_interval(gaps[:, None], ci)
            finite = gaps[np.isfinite(gaps)]
            # One-sided bootstrap p-value of "the slice is not worse than the rest by more than
            # min_gap" (the subgroup flags' rule: the harm must clear the tolerance, not zero).
            p = (
                (1 + np.sum(sign * finite >= -min_gap)) / (1 + finite.size)
                if finite.size
                else np.nan
            )
            rows[i].update(value=a, rest_value=b, gap=a - b, ci_low=lo[0], ci_high=hi[0], p_value=p)
    table = pd.DataFrame(rows)
    for col in ("value", "rest_value", "gap", "ci_low", "ci_high", "p_value"):
        if col not in table:
            table[col] = np.nan
    table["p_adjusted"] = holm(table["p_value"].to_numpy(np.float64))
    signed = table["gap"] * table["metric"].map(lambda m: DIRECTION.get(m, 0) if m else 0)
    table["significant"] = (table["p_adjusted"] <= alpha) & (signed < -min_gap)
    # Worst first: significant slices, then by gap (signed so that negative is worse).
    table["_key"] = signed.fillna(np.inf)
    table = table.sort_values(["significant", "_key"], ascending=[False, True], kind="stable")
    table["slice"] = np.arange(1, len(table) + 1)
    renumber = dict(zip(table["component"], table["slice"], strict=True))
    table = table.drop(columns=["_key", "component"]).reset_index(drop=True)
    table = table[list(SLICE_COLUMNS)]
    table["significant"] = table["significant"].astype(bool)
    slice_of = np.vectorize(renumber.get)(comp) if n else np.zeros(0, np.int64)
    members = pd.DataFrame(
        {
            "row": np.arange(n),
            "case_id": ids,
            "slice": slice_of.astype(np.int64),
            "responsibility": resp.astype(np.float64),
            "half": np.where(test, "test", "discovery"),
        }
    )
    settings["status"] = (
        f"{int(table['significant'].sum())} significant of {len(table)} slices "
        f"({len(order)} tested)"
    )
    from .describe import enrichment_table, image_stats_table

    return SliceDiscovery(
        table=table,
        members=members,
        enrichment=enrichment_table(members["slice"].to_numpy(), attributes),
        image_stats=image_stats_table(members["slice"].to_numpy(), image_stats),
        settings=settings,
    )


def empty_table() -> pd.DataFrame:
    """A slice table with no rows and the contract's columns and dtypes."""
    df = pd.DataFrame({c: pd.Series(dtype=np.float64) for c in SLICE_COLUMNS})
    for c in ("slice", "n", "n_test", "n_test_positive"):
        df[c] = df[c].astype(np.int64)
    df["significant"] = df["significant"].astype(bool)
    df["metric"] = df["metric"].astype(object)
    df["note"] = df["note"].astype(object)
    df["label"] = df["label"].astype(object)
    return df


def _empty(ids: np.ndarray, test: np.ndarray, settings: dict[str, Any]) -> SliceDiscovery:
    members = pd.DataFrame(
        {
            "row": np.arange(len(ids)),
            "case_id": ids,
            "slice": np.zeros(len(ids), np.int64),
            "responsibility": np.ones(len(ids)),
            "half": np.where(test, "test", "discovery"),
        }
    )
    return SliceDiscovery(table=empty_table(), members=members, settings=settings)
