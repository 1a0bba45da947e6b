"""Findings benchmark: does a default audit report what was injected, and nothing else?

Each (scenario, seed) draws three data sets from the project's generator with one injected
effect (or none), trains a small seeded CNN on the first, runs a **default** audit on the second
and measures the true effect on the third, large, held-out one::

    Audit(model, data, sensitive=["sex", "age_group", "site"], methods=["gradcam"],
          output_dir=<tmp>).run()

Scenarios (see ``scenario()``; the group, intersection, site, token shape and token place change
with the seed):

* ``disparity``: lesions fainter in one group of one attribute -> a high ``disparity``
  finding for that group.
* ``intersection``: lesions fainter only in one intersection of two attributes -> a high
  ``disparity`` finding for that intersection; single-group findings for its two components are
  *misattributed*.
* ``shortcut``: a token (text-like bar, ring or square) at a random place (interior or edge) on
  most positives of one site -> a high ``shortcut`` finding for that site whose evidence ``box``
  overlaps the token.
* ``blur_site``: one site with much blurrier, noisier images, no lesion change -> a disparity
  finding for that site only if the trained model really is worse there.
* ``control``: nothing injected -> no high or medium finding.

Verification is independent of the audit: the trained model is scored on the held-out set at
the audit's operating threshold; the shortcut is measured by pasting the token on clean
negatives and erasing it from marked positives (the generator redraws the same images with the
token everywhere / nowhere, so the counterfactual is exact); the explanation checks are
re-measured with captum's Grad-CAM. See ``RULES`` for how each run is scored.

Usage::

    python bench/findings.py --quick                 # 1 seed per scenario, small sizes
    python bench/findings.py                         # 5 scenarios x 5 seeds
    python bench/findings.py --scenarios shortcut --seeds 0 1 2 --jobs 1 --resume

Writes ``bench/results/findings.json`` (every run, appended as it finishes; ``--resume`` skips
runs already there with the same settings) and ``bench/findings.md`` (the tables; any text below
the history marker of an existing file is kept).
"""

from __future__ import annotations

import os

# Under CPU contention OpenMP's spinning workers slow small convolutions 5-10x; must be set
# before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import OrderedDict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xai_audit.datasets import SiteAcquisition, SyntheticConfig, make_synthetic_cxr  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "findings.json"
MARKDOWN = ROOT / "bench" / "findings.md"
HISTORY_MARKER = "<!-- history: text below this line is kept by bench/findings.py -->"

ATTRIBUTES = ("sex", "age_group", "site")
PAIRS = (("sex", "age_group"), ("sex", "site"), ("age_group", "site"))
SCENARIOS = ("disparity", "intersection", "shortcut", "blur_site", "control")
FLAG_METRICS = ("sensitivity", "specificity", "auroc")  # what a default audit flags
TOLERANCE = 0.05  # the audit's default tolerance
MIN_AUROC = 0.80  # a model below this on the held-out set makes the run invalid
POWER_Z = 2.8  # 1.96 + 0.84: the audit's CI rule finds a gap this many SE beyond tolerance 80%
SHORTCUT_FLIPS = (0.02, 0.10)  # decision flips below: none; between: weak; above: clear
INTERSECTION_SEP, GROUP_SEP = " × ", " | "

RULES = f"""\
* A run is **valid** when the model's held-out AUROC is >= {MIN_AUROC} and the audit finished.
* Every injected effect is measured on the held-out set at the audit's threshold and classed
  *clear* (the audit's rule should find it: gap > tolerance + {POWER_Z} x the gap's standard
  error at the audit set's group sizes, about 80% power), *weak* (beyond the tolerance
  {TOLERANCE} but not clear) or *not materialised* (within the tolerance). Disparity,
  intersection and blur: the worst of sensitivity, specificity and AUROC (the metrics a default
  audit flags) of the group vs overall; fainter lesions usually cost sensitivity, but a model
  may instead shift all its scores for the group. Shortcut: share of decisions flipped by pasting
  the token on the site's clean negatives or erasing it from its marked positives (clear >=
  {SHORTCUT_FLIPS[1]:.0%}, weak >= {SHORTCUT_FLIPS[0]:.0%}).
* **found**: a high finding of the right kind for the right group (shortcut: naming the site,
  with an evidence box that overlaps the token; a finding without a box is counted as found and
  marked "no box"). **missed**: a clear effect not found. A weak effect not found is not a
  miss; a not-materialised effect is neither found nor missed.
* Every other high or medium finding is checked against the held-out truth: a disparity
  finding whose group's true gap (any flagged metric, vs overall or vs the best group) exceeds
  the tolerance is a **true other** finding (an effect that emerged, not a false flag);
  single-group findings for the components of an injected intersection are **misattributed**
  unless that group also has a true gap beyond the tolerance without the cell's images;
  a shortcut finding at the right site whose box misses the token is **mislocated** (and the
  effect is missed); sanity, faithfulness and localisation findings are false when captum's
  Grad-CAM, re-measured on held-out images, passes that check; everything else is a **false
  flag**.
"""


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class Settings:
    """Sizes and training recipe of one run (recorded with every result)."""

    image_size: int = 64
    n_train: int = 1500
    n_audit: int = 900
    n_heldout: int = 6000
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-3
    threads: int = 2
    faint_factor: float = 0.30
    n_verify_maps: int = 128


QUICK = Settings(n_audit=700, n_heldout=2500, n_verify_maps=64)  # same model recipe

DISPARITY_TARGETS = (
    {"sex": "F"},
    {"site": "B"},
    {"age_group": "65+"},
    {"site": "A"},
    {"sex": "M"},
    {"age_group": "18-39"},
)
INTERSECTION_TARGETS = (
    {"sex": "F", "age_group": "65+"},
    {"sex": "M", "site": "A"},
    {"age_group": "40-64", "site": "B"},
    {"sex": "F", "site": "B"},
    {"sex": "M", "age_group": "18-39"},
)
SHORTCUT_SITES = ("C", "A", "B")
#: (shape, height, width) in px at 128 px, i.e. half that at the bench's 64 px.
TOKENS = (("text", 8, 28), ("ring", 12, 12), ("square", 8, 8))
BLUR_SITES = ("A", "C", "B")
BLUR = {"blur_sigma": 3.0, "noise_sd": 0.06}  # vs 0-0.8 and 0.02-0.03 at the other sites
#: ``--coded-attributes``: the audit reads sex as integers and site as float codes with 5 %
#: missing (as pandas reads a CSV column with blanks), age groups stay text. The findings are
#: decoded before scoring, so the same truth applies.
CODES: dict[str, dict[str, Any]] = {"sex": {"F": 0, "M": 1}, "site": {"A": 1.0, "B": 2.0, "C": 3.0}}
CODED_MISSING = {"site": 0.05}


@dataclass
class Scenario:
    """One (scenario, seed): the generator configuration and what should be found."""

    name: str
    seed: int
    config: SyntheticConfig
    control: bool = False
    expected: dict[str, Any] | None = None
    description: str = ""
    data_seeds: dict[str, int] = field(default_factory=dict)


def _no_effect() -> SyntheticConfig:
    return SyntheticConfig(faint_factor=1.0, p_marker_positive=0.0, p_marker_negative=0.0)


def _where(conditions: dict[str, str]) -> str:
    return " & ".join(f"{a}={g}" for a, g in conditions.items())


def _token_place(seed: int, shape_hw: tuple[int, int]) -> tuple[tuple[int, int], str]:
    """Top-left (row, col) in px at 128 px: interior for even seeds, along an edge (away from
    the corners) for odd ones."""
    rng = np.random.default_rng([20261130, seed])
    h, w = shape_hw
    if seed % 2 == 0:
        row, col = rng.integers(32, 96 - h + 1), rng.integers(32, 96 - w + 1)
        return (int(row), int(col)), "interior"
    side = ("top", "bottom", "left", "right")[int(rng.integers(4))]
    if side in ("top", "bottom"):
        col = int(rng.integers(32, 96 - w + 1))
        return ((4 if side == "top" else 124 - h), col), f"{side} edge"
    row = int(rng.integers(32, 96 - h + 1))
    return (row, (4 if side == "left" else 124 - w)), f"{side} edge"


def scenario(name: str, seed: int, settings: Settings) -> Scenario:
    """Build the generator configuration of ``name`` for ``seed``."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; choose from {list(SCENARIOS)}")
    state = np.random.SeedSequence([SCENARIOS.index(name), seed]).generate_state(4)
    seeds = dict(zip(("train", "audit", "heldout", "torch"), (int(s) for s in state)))
    base = _no_effect()
    if name in ("disparity", "intersection"):
        targets = DISPARITY_TARGETS if name == "disparity" else INTERSECTION_TARGETS
        cond = dict(targets[seed % len(targets)])
        cfg = replace(base, faint_factor=settings.faint_factor, faint_where=cond)
        return Scenario(
            name,
            seed,
            cfg,
            expected={"kind": "disparity", "conditions": cond},
            description=f"lesion contrast x{settings.faint_factor} in {_where(cond)}",
            data_seeds=seeds,
        )
    if name == "shortcut":
        site = SHORTCUT_SITES[seed % len(SHORTCUT_SITES)]
        shape, h, w = TOKENS[seed % len(TOKENS)]
        pos, place = _token_place(seed, (h, w))
        cfg = replace(
            base,
            marker_site=site,
            p_marker_positive=0.90,
            p_marker_negative=0.05,
            marker_shape=shape,
            marker_size=float(h),
            marker_width=float(w),
            marker_position=(float(pos[0]), float(pos[1])),
        )
        return Scenario(
            name,
            seed,
            cfg,
            expected={"kind": "shortcut", "site": site, "shape": shape, "place": place},
            description=f"{shape} token, {place}, on 90% of positives / 5% of negatives at "
            f"site {site}",
            data_seeds=seeds,
        )
    if name == "blur_site":
        site = BLUR_SITES[seed % len(BLUR_SITES)]
        sites = dict(base.sites)
        sites[site] = SiteAcquisition(contrast_gain=sites[site].contrast_gain, **BLUR)
        cfg = replace(base, sites=sites)
        return Scenario(
            name,
            seed,
            cfg,
            expected={"kind": "blur", "site": site},
            description=f"site {site}: blur sigma {BLUR['blur_sigma']} px at 128 px, noise sd "
            f"{BLUR['noise_sd']}",
            data_seeds=seeds,
        )
    return Scenario(
        name,
        seed,
        SyntheticConfig(),
        control=True,
        description="nothing injected (control mode: faint factor 1, no token, default sites)",
        data_seeds=seeds,
    )


# ------------------------------------------------------------------------------ model
def _block(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False),
            norm=nn.BatchNorm2d(c_out),
            relu=nn.ReLU(),
        )
    )


class BenchCNN(nn.Module):
    """A small CNN for 64 px images (about 24k parameters).

    Strided convolutions instead of max pooling: ``DemoCNN`` at 64 px spends most of its CPU
    time in a 1-channel 3x3 convolution and max pooling, and took about 24 ms per image and
    epoch here, this net about 1 ms. The last block keeps a 16 x 16 map (4 px per cell), the
    layer Grad-CAM explains.
    """

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(0.5))
        self.register_buffer("std", torch.tensor(0.25))
        self.features = nn.Sequential(
            OrderedDict(
                block1=_block(1, width, 5, 2),
                block2=_block(width, 2 * width, 3, 2),
                block3=_block(2 * width, 2 * width, 3, 1),
                block4=_block(2 * width, 2 * width, 3, 1),
            )
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(2 * width, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features((x - self.mean) / self.std)
        return self.head(torch.flatten(self.pool(x), 1))


def predict(net: nn.Module, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Positive-class probabilities."""
    net.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
            out.append(torch.softmax(net(x), dim=1)[:, 1].numpy())
    return np.concatenate(out)


def train_model(data: Any, settings: Settings, seed: int) -> tuple[BenchCNN, dict[str, Any]]:
    """AdamW with a one-cycle schedule, seeded; no augmentation (flips would move the token)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = BenchCNN()
    n = len(data)
    steps = settings.epochs * int(np.ceil(n / settings.batch_size))
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.lr, total_steps=steps)
    x = torch.from_numpy(data.images.copy())
    y = torch.from_numpy(data.metadata["label"].to_numpy().copy()).long()
    t0 = time.perf_counter()
    for _ in range(settings.epochs):
        net.train()
        order = torch.from_numpy(rng.permutation(n))
        for s in range(0, n, settings.batch_size):
            idx = order[s : s + settings.batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
            sched.step()
    net.eval()
    return net, {"seconds": time.perf_counter() - t0, "n_parameters": _n_params(net)}


def _n_params(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


# ------------------------------------------------------------------------------ truth
def _key(conditions: dict[str, str]) -> tuple[str, str]:
    """(attribute, group) as the audit names them, attributes in the audit's order."""
    items = sorted(conditions.items(), key=lambda kv: ATTRIBUTES.index(kv[0]))
    return INTERSECTION_SEP.join(a for a, _ in items), GROUP_SEP.join(g for _, g in items)


def _components(attribute: str, group: str) -> frozenset[tuple[str, str]]:
    names = attribute.split(INTERSECTION_SEP)
    values = group.split(GROUP_SEP) if len(names) > 1 else [group]
    return frozenset(zip(names, values))


def _metrics(y: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    pos, neg = y == 1, y == 0
    nan = float("nan")
    return {
        "n": int(len(y)),
        "n_pos": int(pos.sum()),
        "sensitivity": float(pred[pos].mean()) if pos.any() else nan,
        "specificity": float(1 - pred[neg].mean()) if neg.any() else nan,
        "auroc": float(roc_auc_score(y, score)) if pos.any() and neg.any() else nan,
    }


def group_truth(meta: pd.DataFrame, score: np.ndarray, threshold: float) -> dict[str, Any]:
    """Per-group metrics at ``threshold``: every group of each attribute and of each pair."""
    y = meta["label"].to_numpy()
    pred = score >= threshold
    out: dict[str, Any] = {"overall": _metrics(y, pred, score), "groups": {}}
    columns = [(a,) for a in ATTRIBUTES] + list(PAIRS)
    for cols in columns:
        keys = meta[list(cols)].astype(str).agg(GROUP_SEP.join, axis=1).to_numpy()
        attribute = INTERSECTION_SEP.join(cols)
        for g in sorted(set(keys)):
            m = keys == g
            out["groups"][f"{attribute}={g}"] = {
                "attribute": attribute,
                "group": g,
                **_metrics(y[m], pred[m], score[m]),
            }
    return out


def true_harm(
    meta: pd.DataFrame,
    score: np.ndarray,
    threshold: float,
    comps: frozenset[tuple[str, str]],
    exclude: dict[str, str] | None = None,
) -> dict[str, float]:
    """How much worse a group truly is, per flag metric: max(vs overall, vs best peer group).

    ``comps`` = {(attribute, group), ...}; peers are all groups of the same attributes.
    Computed on the held-out set, for any combination the audit may name; ``exclude`` drops
    the images of one cell first (does the group have a gap of its own, outside that cell?).
    """
    if exclude:
        keep = ~_mask_of(meta, exclude)
        meta, score = meta[keep].reset_index(drop=True), score[keep]
    cols = sorted({a for a, _ in comps}, key=lambda a: ATTRIBUTES.index(a))
    if any(c not in meta.columns for c in cols):
        return {}
    want = GROUP_SEP.join(dict(comps)[c] for c in cols)
    keys = meta[cols].astype(str).agg(GROUP_SEP.join, axis=1).to_numpy()
    y, pred = meta["label"].to_numpy(), score >= threshold
    overall = _metrics(y, pred, score)
    per = {g: _metrics(y[keys == g], pred[keys == g], score[keys == g]) for g in set(keys)}
    # --coded-attributes: values were removed at random (held-out data keep them all), so a
    # "missing" component is a random sample of its attribute: the group truly performs as
    # the cell of its other components (as the whole data set when none is left).
    known = {(a, g) for a, g in comps if g != "missing"}
    if known != set(comps):
        rows = _mask_of(meta, dict(known)) if known else np.ones(len(meta), bool)
        per[want] = _metrics(y[rows], pred[rows], score[rows])
    if want not in per:
        return {}
    harm = {}
    for m in FLAG_METRICS:
        v = per[want][m]
        if np.isfinite(v):
            best = np.nanmax([r[m] for r in per.values() if r["n"] >= 30])
            harm[m] = float(max(overall[m] - v, best - v))
    return harm


def _gap_se(
    meta: pd.DataFrame,
    score: np.ndarray,
    threshold: float,
    in_group: np.ndarray,
    metric: str,
    n_audit: int,
    rng: np.random.Generator,
    reps: int = 200,
) -> float:
    """Standard error of (overall - group) for ``metric`` on an audit-sized sample.

    Simulated by drawing audit-sized samples from the held-out set, so that it holds for AUROC
    too; patients are ignored (each held-out image is its own draw).
    """
    y = meta["label"].to_numpy()
    pred = score >= threshold
    gaps = []
    for _ in range(reps):
        idx = rng.integers(0, len(y), n_audit)
        yi, pi, si, gi = y[idx], pred[idx], score[idx], in_group[idx]
        a, b = _metrics(yi, pi, si)[metric], _metrics(yi[gi], pi[gi], si[gi])[metric]
        if np.isfinite(a) and np.isfinite(b):
            gaps.append(a - b)
    return float(np.std(gaps)) if len(gaps) > 10 else float("nan")


def classify_gap(gap: float, se: float) -> str:
    """``clear``, ``weak`` or ``not materialised`` (see RULES)."""
    if not np.isfinite(gap) or gap <= TOLERANCE:
        return "not materialised"
    if np.isfinite(se) and gap - POWER_Z * se > TOLERANCE:
        return "clear"
    return "weak"


def _mask_of(meta: pd.DataFrame, conditions: dict[str, str]) -> np.ndarray:
    m = np.ones(len(meta), dtype=bool)
    for a, g in conditions.items():
        m &= (meta[a] == g).to_numpy()
    return m


def verify_disparity(
    scn: Scenario, held: Any, score: np.ndarray, thr: float, truth: dict, settings: Settings
) -> dict[str, Any]:
    """The faint group vs overall; for an intersection, its neighbouring cells too.

    Fainter lesions lower sensitivity at a fixed threshold, but a model may instead shift its
    scores for the whole group (e.g. a group whose images also differ in noise), which shows
    as lower specificity or AUROC: the worst of the flagged metrics decides, as for the audit.
    """
    cond = scn.expected["conditions"]
    meta = held.metadata
    attribute, group = _key(cond)
    row = truth["groups"][f"{attribute}={group}"]
    gaps = {m: truth["overall"][m] - row[m] for m in FLAG_METRICS}
    worst = max(gaps, key=lambda m: gaps[m] if np.isfinite(gaps[m]) else -1.0)
    rng = np.random.default_rng(scn.data_seeds["heldout"])
    se = _gap_se(meta, score, thr, _mask_of(meta, cond), worst, settings.n_audit, rng)
    out = {
        "group": _where(cond),
        "sensitivity_group": row["sensitivity"],
        "sensitivity_overall": truth["overall"]["sensitivity"],
        "gaps": gaps,
        "metric": worst,
        "gap": gaps[worst],
        "gap_se_at_audit_size": se,
        "status": classify_gap(gaps[worst], se),
    }
    if len(cond) > 1:
        # The single groups are affected only through the cell: their other cells are not.
        (a1, g1), (a2, g2) = cond.items()
        y, pred = meta["label"].to_numpy() == 1, score >= thr
        in1, in2 = (meta[a1] == g1).to_numpy(), (meta[a2] == g2).to_numpy()
        cells = {
            f"{a1}={g1} & {a2}!={g2}": in1 & ~in2,
            f"{a1}!={g1} & {a2}={g2}": ~in1 & in2,
            f"{a1}!={g1} & {a2}!={g2}": ~in1 & ~in2,
        }
        out["sensitivity_other_cells"] = {k: float(pred[m & y].mean()) for k, m in cells.items()}
        out["single_group_gaps"] = {
            f"{a}={g}": truth["overall"]["sensitivity"] - truth["groups"][f"{a}={g}"]["sensitivity"]
            for a, g in cond.items()
        }
    return out


def verify_blur(
    scn: Scenario, held: Any, score: np.ndarray, thr: float, truth: dict, settings: Settings
) -> dict[str, Any]:
    """Every flag metric at the blurry site vs overall; the worst one decides."""
    site = scn.expected["site"]
    row = truth["groups"][f"site={site}"]
    gaps = {m: truth["overall"][m] - row[m] for m in FLAG_METRICS}
    worst = max(gaps, key=lambda m: gaps[m])
    rng = np.random.default_rng(scn.data_seeds["heldout"])
    meta = held.metadata
    se = _gap_se(meta, score, thr, (meta["site"] == site).to_numpy(), worst, settings.n_audit, rng)
    return {
        "group": f"site={site}",
        "gaps": gaps,
        "metric": worst,
        "gap": gaps[worst],
        "gap_se_at_audit_size": se,
        "status": classify_gap(gaps[worst], se),
        "site_metrics": {m: row[m] for m in FLAG_METRICS},
    }


def verify_shortcut(
    scn: Scenario, net: nn.Module, thr: float, settings: Settings
) -> dict[str, Any]:
    """Paste the token on clean negatives, erase it from positives: exact counterfactuals.

    The generator draws the same cases for the same seed whatever the marker probabilities,
    so the held-out set redrawn with the token on every image and on none differs only in the
    token's pixels.
    """
    site = scn.expected["site"]
    seed = scn.data_seeds["heldout"]
    everywhere = replace(
        scn.config, p_marker_positive=1.0, p_marker_negative=1.0, p_marker_other_sites=1.0
    )
    nowhere = replace(
        scn.config, p_marker_positive=0.0, p_marker_negative=0.0, p_marker_other_sites=0.0
    )
    n, size = settings.n_heldout, settings.image_size
    with_tok = make_synthetic_cxr(n, size, seed=seed, config=everywhere)
    without = make_synthetic_cxr(n, size, seed=seed, config=nowhere)
    s_with, s_without = predict(net, with_tok.images), predict(net, without.images)
    meta = without.metadata
    y, at_site = meta["label"].to_numpy(), (meta["site"] == site).to_numpy()
    neg, pos = at_site & (y == 0) & (s_without < thr), at_site & (y == 1) & (s_with >= thr)
    paste_flip = float((s_with[neg] >= thr).mean()) if neg.any() else float("nan")
    erase_flip = float((s_without[pos] < thr).mean()) if pos.any() else float("nan")
    flips = np.nanmax([paste_flip, erase_flip])
    status = (
        "clear"
        if flips >= SHORTCUT_FLIPS[1]
        else "weak"
        if flips >= SHORTCUT_FLIPS[0]
        else "not materialised"
    )
    region = with_tok.card["effects"][0]["region"]
    other = ~at_site & (y == 0) & (s_without < thr)
    return {
        "site": site,
        "box": region["box"],
        "shape": region["shape"],
        "place": scn.expected["place"],
        "n_clean_negatives": int(neg.sum()),
        "paste_flip_share": paste_flip,
        "paste_mean_score_change": float((s_with - s_without)[at_site & (y == 0)].mean()),
        "paste_flip_share_other_sites": float((s_with[other] >= thr).mean()),
        "n_marked_positives": int(pos.sum()),
        "erase_flip_share": erase_flip,
        "erase_mean_score_change": float((s_without - s_with)[at_site & (y == 1)].mean()),
        "status": status,
    }


# ------------------------------------------------------------------------------ trust checks
def _gradcam(net: BenchCNN, images: np.ndarray) -> np.ndarray:
    """captum Grad-CAM of the positive logit at the last block, upsampled, ReLU'd: N x H x W."""
    from captum.attr import LayerAttribution, LayerGradCam

    x = torch.from_numpy(np.ascontiguousarray(images)).requires_grad_(True)
    cam = LayerGradCam(net, net.features.block4).attribute(x, target=1, relu_attributions=True)
    up = LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")
    return up[:, 0].detach().numpy()


def _inpaint_delete(images: np.ndarray, delete: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """Replace deleted pixels by a normalised Gaussian average of the kept ones.

    The fill comes from each image's own surroundings (an in-distribution reference), not
    from a global blur that the model may itself score as positive.
    """
    keep = (~delete).astype(np.float32)[:, None]
    sig = (0, 0, sigma, sigma)
    num = gaussian_filter(images * keep, sig, mode="nearest")
    den = gaussian_filter(keep, sig, mode="nearest")
    fill = num / np.maximum(den, 1e-6)
    return np.where(delete[:, None], fill, images).astype(np.float32)


def _top_share(maps: np.ndarray, share: float) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    k = max(1, int(round(share * flat.shape[1])))
    idx = np.argpartition(-flat, k - 1, axis=1)[:, :k]
    out = np.zeros_like(flat, dtype=bool)
    np.put_along_axis(out, idx, True, axis=1)
    return out.reshape(maps.shape)


def _mean_ci(x: np.ndarray, rng: np.random.Generator) -> tuple[float, float, float]:
    boots = rng.choice(x, (1000, len(x))).mean(axis=1)
    return float(x.mean()), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def verify_trust(net: BenchCNN, held: Any, score: np.ndarray, thr: float, n: int) -> dict:
    """Independent Grad-CAM checks on held-out true positives (captum, not the audit's code).

    * faithfulness: deleting the top 2% Grad-CAM pixels (inpainted from their surroundings)
      lowers the score more than deleting the top 2% of a smooth random map;
    * localisation: the share of Grad-CAM mass inside the lesion mask exceeds the mask's area
      share (what a uniform map would give);
    * sanity: Grad-CAM of the trained net vs a freshly initialised one, rank correlation.
    """
    rng = np.random.default_rng(0)
    meta = held.metadata
    tp = np.flatnonzero((meta["label"].to_numpy() == 1) & (score >= thr))[:n]
    if len(tp) < 10:
        return {"n": int(len(tp))}
    images = held.images[tp]
    cams = _gradcam(net, images)
    s0 = predict(net, images)
    noise = gaussian_filter(rng.random(cams.shape).astype(np.float32), (0, 4, 4))
    drop_cam = s0 - predict(net, _inpaint_delete(images, _top_share(cams, 0.02)))
    drop_rand = s0 - predict(net, _inpaint_delete(images, _top_share(noise, 0.02)))
    adv = _mean_ci(drop_cam - drop_rand, rng)
    masks = held.masks[tp].astype(bool)
    mass = (cams * masks).sum(axis=(1, 2)) / np.maximum(cams.sum(axis=(1, 2)), 1e-12)
    chance = masks.mean(axis=(1, 2))
    loc = _mean_ci(mass - chance, rng)
    torch.manual_seed(12345)
    fresh = BenchCNN().eval()
    k = min(32, len(tp))
    rand_cams = _gradcam(fresh, images[:k])

    def ranks(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(len(a), -1)
        return flat.argsort(axis=1).argsort(axis=1).astype(np.float64)

    ra, rb = ranks(cams[:k]), ranks(rand_cams)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    rho = (ra * rb).sum(axis=1) / np.sqrt((ra**2).sum(axis=1) * (rb**2).sum(axis=1) + 1e-12)
    return {
        "n": int(len(tp)),
        "faithfulness": {
            "drop_gradcam": float(drop_cam.mean()),
            "drop_random": float(drop_rand.mean()),
            "advantage": adv[0],
            "ci": [adv[1], adv[2]],
            "passed": adv[1] > 0,
        },
        "localisation": {
            "mass_in_mask": float(mass.mean()),
            "chance": float(chance.mean()),
            "ci_excess": [loc[1], loc[2]],
            "passed": loc[1] > 0,
        },
        "sanity": {
            "median_rank_corr_vs_random_weights": float(np.median(np.abs(rho))),
            "passed": float(np.median(np.abs(rho))) < 0.5,
        },
    }


# ------------------------------------------------------------------------------ scoring
def _box_overlap(found: Any, true: list[int]) -> float:
    """Share of the true token box covered by the found box ([x0, y0, x1, y1], x1/y1 exclusive)."""
    try:
        x0, y0, x1, y1 = (float(v) for v in found)
    except (TypeError, ValueError):
        return float("nan")
    tx0, ty0, tx1, ty1 = true
    w = max(0.0, min(x1, tx1) - max(x0, tx0))
    h = max(0.0, min(y1, ty1) - max(y0, ty0))
    return w * h / ((tx1 - tx0) * (ty1 - ty0))


def _box_iou(found: Any, true: list[int]) -> float:
    x0, y0, x1, y1 = (float(v) for v in found)
    inter = _box_overlap(found, true) * (true[2] - true[0]) * (true[3] - true[1])
    union = (x1 - x0) * (y1 - y0) + (true[2] - true[0]) * (true[3] - true[1]) - inter
    return float(inter / union) if union > 0 else float("nan")


def _finding_key(f: dict[str, Any]) -> tuple[str, str] | None:
    ev = f.get("evidence") or {}
    if "attribute" in ev and "group" in ev:
        return str(ev["attribute"]), str(ev["group"])
    return None


def score_run(
    scn: Scenario,
    findings: list[dict],
    ver: dict[str, Any],
    harm: Callable[..., dict[str, float]],
) -> dict[str, Any]:
    """Match the audit's findings against the injected effect and the held-out truth.

    ``harm(components, exclude=None)`` gives a group's true gap per metric on the held-out
    set (without the images of the cell ``exclude``).
    """
    flagged = [f for f in findings if f.get("severity") in ("high", "medium")]
    exp = scn.expected
    effect = ver.get("effect") or {}
    status = effect.get("status", "none") if exp else "none"
    outcome: dict[str, Any] = {"effect_status": status, "result": None, "notes": []}
    matched: list[int] = []
    mislocated: list[int] = []

    # A not-materialised effect has nothing to find: a finding for its group is judged by the
    # held-out truth like any other.
    if exp is not None and status != "not materialised":
        for i, f in enumerate(flagged):
            key = _finding_key(f)
            if key is None:
                continue
            comps = _components(*key)
            if exp["kind"] == "disparity" and f["kind"] == "disparity":
                if comps == frozenset(exp["conditions"].items()):
                    matched.append(i)
            elif exp["kind"] == "blur" and f["kind"] == "disparity":
                if comps == {("site", exp["site"])}:
                    matched.append(i)
            elif exp["kind"] == "shortcut" and f["kind"] == "shortcut":
                if ("site", exp["site"]) in comps:
                    box = (f.get("evidence") or {}).get("box")
                    if box is None:
                        matched.append(i)
                        outcome["notes"].append("shortcut finding has no evidence box")
                    elif _box_overlap(box, effect["box"]) > 0:
                        matched.append(i)
                        outcome["box_overlap"] = _box_overlap(box, effect["box"])
                        outcome["box_iou"] = _box_iou(box, effect["box"])
                        outcome["box"] = [float(v) for v in box]
                    else:
                        mislocated.append(i)
                        outcome["box_overlap"] = 0.0
        high = [i for i in matched if flagged[i]["severity"] == "high"]
        if high:
            outcome["result"] = "found"
        elif status == "clear":
            outcome["result"] = "missed"
            if matched:
                outcome["notes"].append("reported as medium, not high")
            if mislocated:
                outcome["notes"].append("shortcut finding's box misses the token")
        elif status == "weak":
            outcome["result"] = "weak, not found"
    if exp is not None and status == "not materialised":
        outcome["result"] = "not materialised"

    misattributed, true_other, false_flags = [], [], []
    trust = ver.get("trust") or {}
    for i, f in enumerate(flagged):
        if i in matched:
            continue
        entry = {"severity": f["severity"], "kind": f["kind"], "title": f.get("title", "")}
        key = _finding_key(f)
        if i in mislocated:  # counted as the miss of the effect, not again as a false flag
            entry["box"] = (f.get("evidence") or {}).get("box")
            outcome["mislocated"] = [entry]
            continue
        if f["kind"] == "disparity" and key is not None:
            comps = _components(*key)
            if (
                exp is not None
                and exp["kind"] == "disparity"
                and len(exp["conditions"]) > 1
                and len(comps) == 1
                and next(iter(comps)) in exp["conditions"].items()
            ):
                # Carried by the injected cell unless the group has a gap outside it too.
                own = harm(comps, exclude=exp["conditions"])
                entry["true_gap_outside_cell"] = own
                if own and max(own.values()) > TOLERANCE:
                    true_other.append(entry)
                else:
                    misattributed.append(entry)
                continue
            gap = harm(comps)
            entry["true_gap"] = gap
            if gap and max(gap.values()) > TOLERANCE:
                true_other.append(entry)
            else:
                false_flags.append(entry)
            continue
        if f["kind"] == "performance" and key is not None and key[0] != "overall":
            # "AUROC at chance for <group>": true when the group's held-out AUROC really is
            # worse than overall or than its best peer by more than the tolerance.
            gap = harm(_components(*key))
            entry["true_gap"] = gap
            if gap.get("auroc", 0.0) > TOLERANCE:
                true_other.append(entry)
            else:
                false_flags.append(entry)
            continue
        check = {"sanity": "sanity", "faithfulness": "faithfulness", "localisation": "localisation"}
        if f["kind"] in check and trust.get(f["kind"]) is not None:
            entry["independent"] = trust[f["kind"]]
            if trust[f["kind"]]["passed"]:
                false_flags.append(entry)
            else:
                true_other.append(entry)
            continue
        false_flags.append(entry)
    outcome.update(
        misattributed=misattributed,
        true_other=true_other,
        false_flags=false_flags,
        n_misattributed=len(misattributed),
        n_true_other=len(true_other),
        n_false=len(false_flags),
    )
    return outcome


# ------------------------------------------------------------------------------ one run
def _slim(f: dict[str, Any]) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [plain(x) for x in v]
        if isinstance(v, np.ndarray):
            return plain(v.tolist()) if v.size <= 16 else f"<array {v.shape}>"
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, str | int | float | bool) or v is None:
            return v
        return str(v)

    keep = ("id", "severity", "kind", "title", "where", "message", "evidence")
    return {k: plain(f.get(k)) for k in keep if k in f}


def coded_attributes(attributes: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The attributes in the coded form (``CODES``, ``CODED_MISSING``), seeded."""
    out = attributes.copy()
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC0DE]))
    for col, codes in CODES.items():
        values = out[col].map(codes)
        share = CODED_MISSING.get(col, 0.0)
        if share:
            values = values.astype(float).where(rng.random(len(values)) >= share)
        out[col] = values
    return out


def _decoded_group(attribute: str, group: str) -> str:
    """A group name of the coded audit in the generator's words (``"2 | 65+"`` -> ``"B | 65+"``)."""
    names = attribute.split(INTERSECTION_SEP)
    values = group.split(GROUP_SEP) if len(names) > 1 else [group]
    if len(values) != len(names):
        return group
    back = {
        n: {str(int(c)) if float(c).is_integer() else str(c): g for g, c in CODES[n].items()}
        for n in names
        if n in CODES
    }
    return GROUP_SEP.join(back.get(n, {}).get(v, v) for n, v in zip(names, values))


def _decode_finding(f: dict[str, Any]) -> dict[str, Any]:
    ev = f.get("evidence")
    if isinstance(ev, dict) and "attribute" in ev and "group" in ev:
        f = {
            **f,
            "evidence": {**ev, "group": _decoded_group(str(ev["attribute"]), str(ev["group"]))},
        }
    return f


def _run_audit(
    net: nn.Module, data: Any, name: str, tries: int = 3, coded_seed: int | None = None
) -> tuple[Any, float]:
    from xai_audit.audit import Audit
    from xai_audit.data import manifest_from_arrays
    from xai_audit.model import ModelAdapter

    meta = data.metadata
    manifest = manifest_from_arrays(
        data.images,
        labels=meta["label"].to_numpy(),
        attributes=meta[list(ATTRIBUTES)]
        if coded_seed is None
        else coded_attributes(meta[list(ATTRIBUTES)], coded_seed),
        masks=data.masks,
        case_ids=meta["case_id"].tolist(),
        patient_ids=meta["patient_id"].tolist(),
    )
    adapter = ModelAdapter(
        net,
        class_names=["normal", "lesion"],
        activation="softmax",
        positive_class="lesion",
        device="cpu",
        name=name,
    )
    for attempt in range(tries):
        t0 = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory(prefix="xai-bench-") as tmp:
                result = Audit(
                    adapter,
                    manifest,
                    sensitive=list(ATTRIBUTES),
                    methods=["gradcam"],
                    output_dir=Path(tmp) / "audit",
                ).run()
            return result, time.perf_counter() - t0
        except Exception:  # noqa: BLE001 - other helpers may be mid-edit: retry, then report
            if attempt == tries - 1:
                raise
            time.sleep(30)
    raise AssertionError("unreachable")


#: Folder of trained weights (``--model-cache``); None: train every run.
MODEL_CACHE: Path | None = None


def _trained(
    name: str, seed: int, settings: Settings, scn: Scenario, make: Any
) -> tuple[BenchCNN, dict[str, Any]]:
    """Train the run's model, or load it from ``MODEL_CACHE`` (training is seeded, so the
    cached weights are those a fresh run would train; the key includes the settings and the
    generator configuration, so a changed scenario trains anew)."""
    key = hashlib.sha256(repr((name, seed, asdict(settings), scn.config)).encode()).hexdigest()
    path = None if MODEL_CACHE is None else MODEL_CACHE / f"{name}_{seed}_{key[:16]}.pt"
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        net = BenchCNN()
        net.load_state_dict(saved["state"])
        net.eval()
        return net, {**saved["info"], "cached": True}
    train = make(settings.n_train, scn.data_seeds["train"])
    net, tinfo = train_model(train, settings, scn.data_seeds["torch"])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": net.state_dict(), "info": tinfo}, path)
    return net, tinfo


def run_one(
    name: str,
    seed: int,
    settings: Settings,
    model_cache: Path | None = None,
    coded: bool = False,
) -> dict[str, Any]:
    """Train, audit, verify and score one (scenario, seed); never raises."""
    global MODEL_CACHE
    MODEL_CACHE = model_cache
    t_start = time.perf_counter()
    torch.set_num_threads(settings.threads)
    scn = scenario(name, seed, settings)
    record: dict[str, Any] = {
        "scenario": name,
        "seed": seed,
        "settings": asdict(settings),
        "description": scn.description,
        "expected": scn.expected,
        "data_seeds": scn.data_seeds,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "coded_attributes": coded,
    }
    try:
        make = lambda n, s: make_synthetic_cxr(  # noqa: E731
            n, settings.image_size, seed=s, control=scn.control, config=scn.config
        )
        net, tinfo = _trained(name, seed, settings, scn, make)
        held = make(settings.n_heldout, scn.data_seeds["heldout"])
        held_score = predict(net, held.images)
        y = held.metadata["label"].to_numpy()
        record["train"] = {**tinfo, "heldout_auroc": float(roc_auc_score(y, held_score))}
        record["valid"] = record["train"]["heldout_auroc"] >= MIN_AUROC
        audit_data = make(settings.n_audit, scn.data_seeds["audit"])
        result, audit_s = _run_audit(
            net,
            audit_data,
            f"bench CNN ({name}, seed {seed})",
            coded_seed=scn.data_seeds["audit"] if coded else None,
        )
        thr = result.threshold
        preds = result.predictions
        findings = [_decode_finding(_slim(f)) for f in result.findings]
        record["audit"] = {
            "seconds": audit_s,
            "threshold": thr,
            "auroc": float(roc_auc_score(preds["label"], preds["score"])),
            "findings": findings,
            "shortcut_tiers": {
                f["where"]: f["evidence"].get("evidence")
                for f in result.findings
                if f["kind"] == "shortcut"
            },
            "scan": [
                {**row, "group": _decoded_group(row["attribute"], str(row["group"]))}
                for row in _scan_rows(result)
            ],
        }
        t_ver = time.perf_counter()
        truth = group_truth(held.metadata, held_score, thr)
        ver: dict[str, Any] = {"truth": truth}
        if scn.expected is not None:
            kind = scn.expected["kind"]
            if kind == "disparity":
                ver["effect"] = verify_disparity(scn, held, held_score, thr, truth, settings)
            elif kind == "blur":
                ver["effect"] = verify_blur(scn, held, held_score, thr, truth, settings)
            else:
                ver["effect"] = verify_shortcut(scn, net, thr, settings)
        ver["trust"] = verify_trust(net, held, held_score, thr, settings.n_verify_maps)
        ver["seconds"] = time.perf_counter() - t_ver
        record["verification"] = ver
        hmeta = held.metadata
        record["score"] = score_run(
            scn,
            findings,
            ver,
            lambda comps, exclude=None: true_harm(hmeta, held_score, thr, comps, exclude),
        )
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the suite
        record["valid"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()[-4000:]
    record["seconds"] = time.perf_counter() - t_start
    return record


# ------------------------------------------------------------------------------ tables
def summarise(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per scenario plus a total row."""
    rows = []
    for name in [s for s in SCENARIOS if any(r["scenario"] == s for r in records)]:
        rs = [r for r in records if r["scenario"] == name]
        valid = [r for r in rs if r.get("valid") and "score" in r]
        res = [r["score"]["result"] for r in valid]
        status = [r["score"]["effect_status"] for r in valid]
        rows.append(
            {
                "scenario": name,
                "runs": len(rs),
                "valid": len(valid),
                "clear": status.count("clear"),
                "weak": status.count("weak"),
                "not_mat": status.count("not materialised"),
                "found": res.count("found"),
                "missed": res.count("missed"),
                "misattr": sum(r["score"]["n_misattributed"] for r in valid),
                "false": sum(r["score"]["n_false"] for r in valid),
                "true_other": sum(r["score"]["n_true_other"] for r in valid),
                "s_per_run": float(np.mean([r["seconds"] for r in rs])),
            }
        )
    df = pd.DataFrame(rows)
    if len(df):
        total = df.drop(columns=["scenario"]).sum(numeric_only=True)
        total["s_per_run"] = float(np.mean([r["seconds"] for r in records]))
        df = pd.concat([df, pd.DataFrame([{"scenario": "total", **total.to_dict()}])])
        counts = [c for c in df.columns if c not in ("scenario", "s_per_run")]
        df[counts] = df[counts].astype(int)
    return df.reset_index(drop=True)


def _fmt(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _effect_text(r: dict[str, Any]) -> str:
    eff = (r.get("verification") or {}).get("effect")
    if not eff:
        return "-"
    if "paste_flip_share" in eff:
        return (
            f"paste flips {_fmt(eff['paste_flip_share'])} of clean negatives "
            f"(score {eff['paste_mean_score_change']:+.2f}), erase flips "
            f"{_fmt(eff['erase_flip_share'])}; box {eff['box']}: {eff['status']}"
        )
    if "sensitivity_group" in eff:
        return (
            f"sens {_fmt(eff['sensitivity_group'])} vs {_fmt(eff['sensitivity_overall'])} "
            f"overall; worst gap {eff['metric']} {_fmt(eff['gap'])} "
            f"(SE {_fmt(eff['gap_se_at_audit_size'])}): {eff['status']}"
        )
    if "gaps" in eff:
        return (
            f"{eff['group']}: worst gap {eff['metric']} {_fmt(eff['gap'])} "
            f"(SE {_fmt(eff['gap_se_at_audit_size'])}): {eff['status']}"
        )
    return (
        f"sens {_fmt(eff['sensitivity_group'])} vs {_fmt(eff['sensitivity_overall'])} overall, "
        f"gap {_fmt(eff['gap'])} (SE {_fmt(eff['gap_se_at_audit_size'])}): {eff['status']}"
    )


def _findings_text(r: dict[str, Any]) -> str:
    fs = [f for f in (r.get("audit") or {}).get("findings", []) if f["severity"] != "info"]
    return "; ".join(f"{f['severity']}: {f.get('title', '')}" for f in fs) or "-"


def _outcome_text(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"error: {r['error'][:80]}"
    if not r.get("valid"):
        return f"invalid (AUROC {_fmt(r['train']['heldout_auroc'])})"
    s = r["score"]
    parts = [s["result"]] if s["result"] else []
    parts += [f"{k} {s['n_' + k.replace(' ', '_')]}" for k in ("misattributed", "false")
              if s["n_" + k.replace(" ", "_")]]  # fmt: skip
    if s["n_true_other"]:
        parts.append(f"true other {s['n_true_other']}")
    parts += s["notes"]
    for f in s["false_flags"]:  # why each false flag is false
        ind = f.get("independent") or {}
        if f["kind"] == "faithfulness" and ind:
            parts.append(
                f"[false {f['kind']}: captum Grad-CAM deletion drops the score "
                f"{ind['drop_gradcam']:.2f} vs {ind['drop_random']:.2f} for random]"
            )
        elif f["kind"] == "localisation" and ind:
            parts.append(
                f"[false {f['kind']}: Grad-CAM mass in mask {ind['mass_in_mask']:.3f} vs "
                f"chance {ind['chance']:.3f}]"
            )
        elif f["kind"] == "sanity" and ind:
            parts.append(
                f"[false {f['kind']}: rank corr. with random-weight maps "
                f"{ind['median_rank_corr_vs_random_weights']:.2f}]"
            )
        elif "true_gap" in f:
            gap = max(f["true_gap"].values()) if f["true_gap"] else float("nan")
            parts.append(f"[false: {f['title']}, true gap {_fmt(gap)}]")
        else:
            parts.append(f"[false: {f['title']}]")
    return ", ".join(parts) or "clean"


def markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The committed report: summary, settings, per-run table, scoring rules."""
    summary = summarise(records)
    lines = [
        "# Findings benchmark",
        "",
        "Generated by `bench/findings.py` (see its docstring). Each run trains a small CNN on "
        "a generated data set with one injected effect (or none), runs a default audit "
        '(`Audit(model, data, sensitive=["sex", "age_group", "site"], methods=["gradcam"])`) '
        "and checks its key findings against the effect measured on a held-out set.",
        "",
        f"* command: `{meta['command']}`",
        f"* finished: {meta['finished']} UTC; code: "
        + ", ".join(f"`{c}`" for c in sorted({r.get("commit", meta["commit"]) for r in records}))
        + (" (with uncommitted changes)" if meta.get("dirty") else ""),
        f"* machine: {meta['machine']}; torch {meta['torch']}, {meta['threads']} threads, "
        f"{meta['jobs']} job(s)",
        f"* wall time: {meta['wall_s'] / 60:.1f} min for {len(records)} runs "
        f"({np.mean([r['seconds'] for r in records]):.0f} s per run on average)",
        "* mean time per run: " + _split_times(records),
        f"* settings: {meta['settings']}",
        f"* seeds: {meta['seeds']}",
        "",
        "## Summary",
        "",
        "`clear` / `weak` / `not_mat`: how the injected effect materialised in the trained "
        "model; `found` / `missed`: of clear effects (a weak one found counts as found); "
        "`misattr`: single-group findings for the parts of an injected intersection; `false`: "
        "false flags (high or medium); `true_other`: flags of real, not injected, gaps.",
        "",
        _table(summary),
        "",
        *scan_summary(records),
        "## Runs",
        "",
        "| scenario | seed | injected | held-out AUROC | threshold | true effect (held-out) | "
        "audit findings (high/medium) | outcome | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["scenario"],
                    str(r["seed"]),
                    r["description"],
                    _fmt((r.get("train") or {}).get("heldout_auroc"), 3),
                    _fmt((r.get("audit") or {}).get("threshold"), 3),
                    _effect_text(r),
                    _findings_text(r).replace("|", "/"),
                    _outcome_text(r),
                    f"{r['seconds']:.0f}",
                ]
            )
            + " |"
        )
    lines += ["", "## Scoring rules", "", RULES]
    return "\n".join(lines) + "\n"


def _scan_rows(result: Any) -> list[dict[str, Any]]:
    """The paste scan's table of the run (one row per subgroup), for the scan summary."""
    table = ((result.quality.get("shortcuts") or {}).get("gradcam") or {}).get("scan")
    if table is None or not len(table):
        return []
    cols = ["attribute", "group", "n_pairs", "n_exceed", "p_value", "candidate"]
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in table[cols].to_dict("records")
    ]


def scan_summary(records: list[dict[str, Any]]) -> list[str]:
    """How the paste scan separated token groups from all others, and which tier found what."""
    token, other = [], []
    for r in records:
        exp = r.get("expected") or {}
        for row in (r.get("audit") or {}).get("scan") or []:
            share = row["n_exceed"] / row["n_pairs"] if row["n_pairs"] else float("nan")
            is_token = exp.get("kind") == "shortcut" and (row["attribute"], row["group"]) == (
                "site",
                exp.get("site"),
            )
            (token if is_token else other).append((share, row["candidate"], r, row))
    tiers: dict[str, int] = {}
    for r in records:
        for tier in ((r.get("audit") or {}).get("shortcut_tiers") or {}).values():
            tiers[tier or "strong"] = tiers.get(tier or "strong", 0) + 1
    if not token and not other:
        return []
    lines = ["## Paste scan", ""]
    if token:
        low = min(token, key=lambda t: t[0])
        lines.append(
            f"* token groups ({len(token)}): {sum(t[1] for t in token)} scan candidates; "
            f"pairs raised by >= 0.05: {min(t[0] for t in token):.0%}-"
            f"{max(t[0] for t in token):.0%} (lowest: {low[2]['scenario']} seed "
            f"{low[2]['seed']}, {low[3]['n_exceed']} of {low[3]['n_pairs']})"
        )
    if other:
        high = max(other, key=lambda t: t[0])
        lines.append(
            f"* every other group of every run ({len(other)}): {sum(t[1] for t in other)} scan "
            f"candidates; highest share of pairs raised: {high[0]:.0%} ({high[2]['scenario']} "
            f"seed {high[2]['seed']}, {high[3]['attribute']}={high[3]['group']}, "
            f"{high[3]['n_exceed']} of {high[3]['n_pairs']}, p={high[3]['p_value']:.2g})"
        )
    lines.append(
        "* shortcut findings by what found them: "
        + ", ".join(f"{k} {v}" for k, v in sorted(tiers.items()))
        + " (strong / weak: the maps' tiers; scan: the paste scan alone)"
    )
    return lines + [""]


def _split_times(records: list[dict[str, Any]]) -> str:
    def mean(section: str) -> float:
        vals = [(r.get(section) or {}).get("seconds") for r in records]
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else float("nan")

    # Cached models carry the seconds their training once took; this run did not spend them.
    trained = [
        r["train"]["seconds"] for r in records if r.get("train") and not r["train"].get("cached")
    ]
    parts = {k: mean(k) for k in ("audit", "verification")}
    parts["train"] = float(np.mean(trained)) if trained else 0.0
    spent = sum(trained) / len(records) if records else 0.0
    rest = float(np.mean([r["seconds"] for r in records])) - (
        parts["audit"] + parts["verification"] + spent
    )
    cached = len(records) - len(trained)
    return (
        f"training {parts['train']:.0f} s"
        + (f" ({cached} of {len(records)} models from the cache)" if cached else "")
        + f", audit {parts['audit']:.0f} s, verification {parts['verification']:.0f} s, data "
        f"generation and the rest {rest:.0f} s"
    )


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "(no runs)"
    cols = list(df.columns)
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        out.append(
            "| "
            + " | ".join(
                f"{v:.0f}" if isinstance(v, float) else str(int(v)) if isinstance(v, np.integer)
                else str(v)
                for v in row
            )
            + " |"
        )  # fmt: skip
    return "\n".join(out)


# ------------------------------------------------------------------------------ main
def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _load(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        return json.loads(path.read_text()).get("runs", [])
    except (OSError, ValueError):
        return []


def _save(path: Path, records: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "runs": records}, indent=1, default=str))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 seed, small sizes")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0-4")
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (processes)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run")
    parser.add_argument("--resume", action="store_true", help="skip runs already in --out")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--md", type=Path, default=MARKDOWN)
    parser.add_argument(
        "--model-cache",
        type=Path,
        default=None,
        help="keep trained weights here and reuse them (to re-audit after a code change)",
    )
    parser.add_argument(
        "--coded-attributes",
        action="store_true",
        help="the audit reads sex as 0/1, site as 1.0/2.0/3.0 with 5%% missing (CODES)",
    )
    args = parser.parse_args(argv)

    settings = QUICK if args.quick else Settings()
    if args.threads is not None:
        settings = replace(settings, threads=args.threads)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else list(range(5)))
    todo = [(s, k) for s in args.scenarios for k in seeds]
    done = [
        r
        for r in _load(args.out)
        if r.get("settings") == asdict(settings)
        and bool(r.get("coded_attributes")) == args.coded_attributes
    ]
    records = [r for r in done if (r["scenario"], r["seed"]) in todo] if args.resume else []
    have = {(r["scenario"], r["seed"]) for r in records}
    todo = [t for t in todo if t not in have]

    meta = {
        "command": " ".join(
            ["python bench/findings.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "torch": torch.__version__,
        "threads": settings.threads,
        "jobs": args.jobs,
        "settings": asdict(settings),
        "seeds": seeds,
        "coded_attributes": args.coded_attributes,
    }
    t0 = time.perf_counter()
    print(f"{len(todo)} run(s) to do, {len(records)} reused; settings {asdict(settings)}")

    def done_one(rec: dict[str, Any]) -> None:
        records.append(rec)
        _save(args.out, records, meta)
        print(
            f"[{time.perf_counter() - t0:6.0f}s] {rec['scenario']:12s} seed {rec['seed']}: "
            f"{_outcome_text(rec)} | {_effect_text(rec)} | {_findings_text(rec)} "
            f"({rec['seconds']:.0f}s)",
            flush=True,
        )

    if args.jobs <= 1:
        for name, seed in todo:
            done_one(run_one(name, seed, settings, args.model_cache, args.coded_attributes))
    else:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = [
                pool.submit(run_one, name, seed, settings, args.model_cache, args.coded_attributes)
                for name, seed in todo
            ]
            for fut in futures:
                done_one(fut.result())

    order = {(s, k): i for i, (s, k) in enumerate((s, k) for s in SCENARIOS for k in range(100))}
    records.sort(key=lambda r: order.get((r["scenario"], r["seed"]), 10**6))
    meta["wall_s"] = time.perf_counter() - t0 + sum(r["seconds"] for r in done if r in records)
    meta["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    _save(args.out, records, meta)
    print()
    print(summarise(records).to_string(index=False))
    text = markdown(records, meta)
    if args.md.is_file():
        old = args.md.read_text()
        if HISTORY_MARKER in old:
            text += "\n" + old[old.index(HISTORY_MARKER) :]
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(text)
    print(f"\nwrote {args.out} and {args.md}")
    return records


if __name__ == "__main__":
    main()
