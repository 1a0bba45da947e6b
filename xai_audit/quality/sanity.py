"""Sanity checks for saliency maps (Adebayo et al., 2018).

Model-parameter randomisation: the model is copied, its layers with parameters are
re-initialised one after another from the output layer down (cascading), and after every
step the maps are recomputed with the same explainer and compared with the original maps.
An explanation that reflects what the model learned must change; one that does not (an
edge detector, for instance) is explaining the image, not the model, and fails.

The verdict reads the whole cascade, not only its last step (see :func:`cascade_verdict`):
Adebayo et al.'s finding is that Guided Backprop and Guided Grad-CAM stay similar while the
top of the network is random and only change once the lowest layers are, so a rule on the
fully randomised model alone lets them pass. A method passes when the mean similarity over
the cascade (the normalised area under the similarity-vs-layers curve) is below the
threshold, or when the similarity falls below it within the top half of the cascade and is
below it with every layer random. Similarity is the median over images of the
Spearman rank correlation of the *signed* maps (the paper's "no ABS" variant; its ABS
variant and SSIM are reported too).

The cheap stand-in for Adebayo's data-randomisation test (retraining on shuffled labels is
too expensive for an audit) is the random-label-logit check: explain a randomly chosen
*other* class and compare (see :func:`label_verdict`). Maps that stay the same are not
class-specific, and this fails the method. For a two-class softmax model, the other class's
maps of a gradient-type method are close to the mirror image of the first (the two logits'
gradients are nearly opposite), so a sign flip counts as class-specific; for magnitude maps
(all values >= 0, e.g. saliency with ``abs=True``) of such a model the check cannot tell a
mirror image from the same map and says "inconclusive", which does not count.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch import nn

from ._validate import as_adapter, as_image_tensor, as_maps, resolve_targets
from .faithfulness import _py
from .stats import normalise_unit, spearman_rows, ssim_rows

#: ``f(adapter, images, targets) -> maps`` (numpy ``N x H x W`` or an ``Attribution``).
Explainer = Callable[[Any, torch.Tensor, np.ndarray], Any]

#: Similarity at or above which maps count as unchanged. Adebayo et al. show model-dependent
#: maps falling to rank correlations ~0-0.3 after randomisation, while edge detectors and
#: Guided Backprop stay near 0.7-1; 0.5 sits between them. Measured on the demo CNN (signed
#: Spearman, 16 images; mean over the 9 cascade steps / lowest over the top 5): Grad-CAM
#: 0.08 / -0.13, gradients 0.35 / 0.24, integrated gradients -0.02 / -0.26, against Guided
#: Backprop 0.74 / 0.78, Guided Grad-CAM 0.56 / 0.60 and the edge detector 1.0 / 1.0
#: (``python bench/quality.py --sanity``).
DEFAULT_THRESHOLD = 0.5

#: Share of the cascade (from the output down) within which the maps must have changed.
#: Half, not the first step or the top third: on small CNNs Grad-CAM and gradients can stay
#: similar after the output layer (and a norm layer) alone are re-initialised and change only
#: once the last conv layer is (measured on 2-4 conv-layer CNNs), while Guided Backprop stays
#: similar over the top half of the demo CNN and of small batch-norm CNNs with max pooling.
TOP_FRACTION = 1 / 2

#: Bumped when the verdict rule changes, so that stored audit checkpoints are recomputed.
VERDICT_VERSION = 3

#: The similarity measures this module computes (the first one of ``metrics`` decides).
METRICS = ("spearman", "spearman_abs", "ssim")

#: The verdict rule, in words, for reports.
RULE = (
    "Cascading model-parameter randomisation (Adebayo et al., 2018): the model's layers are "
    "re-initialised one by one from the output down and the maps are recomputed after each "
    "step. Similarity to the trained model's maps is the median over images of the Spearman "
    "rank correlation of the signed maps. A method passes when its mean similarity over all "
    "steps (the area under the similarity curve) is below {threshold}, or when the similarity "
    "falls below {threshold} within the top half of the cascade (from the output down) and "
    "is below {threshold} once every layer is random. "
    "Maps that stay similar while the top half of the network is random (as Guided "
    "Backprop's do) explain the image, not the model. The random-label check explains another class: maps that stay the "
    "same (Spearman >= {threshold}) are not class-specific and fail the method; for a "
    "two-class model a mirrored map (negative correlation) is class-specific, and for "
    "magnitude maps (no sign) of a two-class model the check is inconclusive and does not "
    "count."
)


def edge_detector(adapter: Any, images: torch.Tensor, targets: np.ndarray) -> np.ndarray:
    """A model-independent "explanation": Sobel edge magnitude of the input.

    The negative control of the sanity check: it ignores the model entirely, so it must
    fail. Useful to show reviewers that the check can fail.
    """
    x = images.detach().cpu().numpy().astype(np.float64).sum(axis=1)
    axes = range(1, x.ndim)
    mag = np.sqrt(sum(ndimage.sobel(x, axis=a) ** 2 for a in axes))
    return mag.astype(np.float32)


def _resolve_explainers(explainer: Any, params: Mapping[str, Any]) -> dict[str, Explainer]:
    """Name -> callable for a method name, a callable, or a list / dict of them."""
    if isinstance(explainer, Mapping):
        return {str(k): _resolve_explainers(v, params)[_name(v)] for k, v in explainer.items()}
    if isinstance(explainer, (list, tuple)):
        out: dict[str, Explainer] = {}
        for e in explainer:
            out.update(_resolve_explainers(e, params))
        return out
    if isinstance(explainer, str):
        method = explainer

        def run(adapter: Any, images: torch.Tensor, targets: np.ndarray) -> Any:
            # Resolved at call time: the explain sub-package is optional for this module.
            from xai_audit.explain import explain

            return explain(adapter, images, method=method, target=targets, **params)

        return {method: run}
    if callable(explainer):
        return {_name(explainer): explainer}
    raise TypeError(
        f"explainer must be a method name, a callable f(adapter, images, targets) or a list "
        f"of them; got {type(explainer).__name__}."
    )


def _name(e: Any) -> str:
    return e if isinstance(e, str) else getattr(e, "__name__", type(e).__name__)


def randomisable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Modules that own parameters, in registration order (input side first)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-initialise one layer's own parameters (``reset_parameters`` or matched noise)."""
    devices = [module_device(module)] if module_device(module).type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
        else:
            for p in module.parameters(recurse=False):
                std = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 0.02
                p.normal_(0.0, std)


def module_device(module: nn.Module) -> torch.device:
    for p in module.parameters():
        return p.device
    return torch.device("cpu")


def _compare(original: np.ndarray, new: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image similarities: Spearman of the signed maps, of ``|maps|``, and SSIM.

    The two Spearman variants are Adebayo et al.'s rank correlation "no ABS" and "ABS";
    SSIM compares the maps scaled to [0, 1] by their peak magnitude.
    """
    flat_a = original.reshape(len(original), -1)
    flat_b = new.reshape(len(new), -1)
    # A map that became flat (e.g. Grad-CAM dying to zero) has changed: no rank agreement.
    became_flat = (np.ptp(flat_b, axis=1) == 0) & (np.ptp(flat_a, axis=1) > 0)
    out = {
        "spearman": spearman_rows(original, new),
        "spearman_abs": spearman_rows(np.abs(original), np.abs(new)),
        "ssim": ssim_rows(normalise_unit(original), normalise_unit(new)),
    }
    out["spearman"][became_flat] = 0.0
    out["spearman_abs"][became_flat] = 0.0
    return out


def _median(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    return float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")


def cascade_verdict(
    similarity: Sequence[float],
    layers: Sequence[str] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    metric: str = "spearman",
    method: str = "method",
) -> dict[str, Any]:
    """Pass / fail of one method from its cascading-randomisation similarity curve.

    The rule (see :data:`RULE`): pass when the mean similarity over all steps (the
    normalised area under the curve) is below ``threshold``, or when the similarity falls
    below it at some step within the top half of the cascade (steps ``1..ceil(n / 2)``,
    output layer first) and is below it at the last, fully randomised step too. A curve that stays
    high while the top of the network is random and only drops at the lowest layers (Guided
    Backprop in Adebayo et al., 2018) fails, as does a flat one (an edge detector); a curve
    that drops after the first steps passes. Not the first step alone: on small CNNs
    Grad-CAM and gradients can stay similar after the output layer alone is re-initialised
    (a random mix of the same few feature maps) and change once the layer below is. The
    lowest similarity within the top half decides, not the value at one fixed step, because
    curves of small networks are not monotone. A low mean suffices on its own: on a 4-layer
    CNN the magnitude of plain gradients can stay similar over the head and the last conv
    layer (0.73) yet fall to ~0 below (mean 0.45), and on small CNNs trained on synthetic
    X-rays Grad-CAM of the fully random model can come back to 0.3-0.45 (the input's bright
    lesion) after changing at the top, so the last step alone must not fail it.

    Parameters
    ----------
    similarity : sequence of float
        Median similarity (original vs randomised maps) after steps 1..n of the cascade,
        output layer first; NaN where undefined.
    layers : sequence of str, optional
        The layer randomised at each step (for the reason text).
    threshold : float, default 0.5
    metric : str, default "spearman"
        Name of the similarity, for the reason text.
    method : str
        Name of the method, for the reason text.

    Returns
    -------
    dict
        ``passed`` (bool, or None when undefined), ``top`` (lowest similarity within the
        top half), ``top_steps``, ``top_layer`` (the last layer of the top half), ``final``,
        ``auc`` (mean similarity over all steps, the normalised area under the curve),
        ``first_changed_step`` / ``first_changed_layer`` (first
        step below the threshold, or None), ``n_steps``, ``threshold``, ``metric`` and
        ``reason``.
    """
    sim = np.asarray(similarity, dtype=np.float64).ravel()
    n = len(sim)
    if n == 0:
        raise ValueError("similarity must hold at least one cascade step.")
    names = [str(v) for v in layers] if layers is not None else [f"step {i + 1}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"layers has {len(names)} names for {n} similarity values.")
    top_steps = max(1, int(np.ceil(n * TOP_FRACTION)))
    finite = np.isfinite(sim)
    auc = float(np.mean(sim[finite])) if finite.any() else float("nan")
    head = sim[:top_steps][finite[:top_steps]]
    top = float(head.min()) if len(head) else float("nan")
    final = float(sim[-1])
    below = np.flatnonzero(finite & (sim < threshold))
    first = int(below[0]) + 1 if len(below) else None
    out: dict[str, Any] = {
        "passed": None,
        "top": top,
        "top_steps": top_steps,
        "top_layer": names[top_steps - 1],
        "final": final,
        "auc": auc,
        "first_changed_step": first,
        "first_changed_layer": names[first - 1] if first else None,
        "n_steps": n,
        "threshold": float(threshold),
        "metric": metric,
    }
    where = (
        f"the top {top_steps} of {n} cascade steps (output layer down to {names[top_steps - 1]})"
    )
    if not np.isfinite(top) or not np.isfinite(final):
        out["reason"] = (
            f"{method}: the {metric} similarity is undefined (constant maps); the check cannot "
            "tell whether the maps depend on the model."
        )
        return out
    early = top < threshold  # changed within the top half
    out["passed"] = bool(auc < threshold or (early and final < threshold))
    numbers = (
        f"median {metric}: lowest over the top {top_steps} steps {top:.2f}, mean over all {n} "
        f"steps {auc:.2f}, {final:.2f} with every layer random; threshold {threshold}"
    )
    if out["passed"]:
        how = (
            f"on average over the cascade and first at step {first} ({names[first - 1]} "
            f"randomised: {sim[first - 1]:.2f})"
            if auc < threshold and first
            else f"at step {first} ({names[first - 1]} randomised: {sim[first - 1]:.2f}) and "
            "with every layer random"
        )
        out["reason"] = (
            f"{method} passes the cascading randomisation check: its maps changed {how} "
            f"({numbers}). They depend on the learned weights."
        )
    else:
        why = f"while {where} are randomised" if not early else "again once every layer is random"
        out["reason"] = (
            f"{method} fails the cascading randomisation check: its maps stay similar to the "
            f"trained model's on average over the cascade and {why} ({numbers}). They "
            "reflect the input image more than the model; do not present them as "
            "explanations of this model."
        )
    return out


def label_verdict(
    similarity: float,
    *,
    n_outputs: int,
    magnitude_maps: bool,
    threshold: float = DEFAULT_THRESHOLD,
    method: str = "method",
) -> dict[str, Any]:
    """Outcome of the random-label check from the median signed Spearman correlation.

    Parameters
    ----------
    similarity : float
        Median over images of the Spearman correlation between the signed maps for the
        explained class and for a random other class.
    n_outputs : int
        Number of model outputs (classes).
    magnitude_maps : bool
        Whether the maps carry no sign (every value >= 0 in both sets of maps).
    threshold : float, default 0.5
    method : str

    Returns
    -------
    dict
        ``status`` ("pass", "fail" or "inconclusive"), ``similarity``, ``reason``.
        ``fail`` means the other class gets the same map (correlation >= threshold). For a
        two-class model a negative correlation (the mirror image: evidence for one class is
        evidence against the other) passes; a high correlation between magnitude maps of a
        two-class model is inconclusive, because the mirror image and the same map have
        the same magnitudes. Undefined (NaN) similarity is inconclusive.
    """
    rho = float(similarity)
    out: dict[str, Any] = {"similarity": rho, "threshold": float(threshold)}
    if not np.isfinite(rho):
        out["status"] = "inconclusive"
        out["reason"] = (
            f"The random-label check of {method} is undefined (constant maps) and does not count."
        )
    elif rho < threshold:
        out["status"] = "pass"
        mirrored = n_outputs == 2 and rho <= -threshold
        out["reason"] = (
            f"Its maps for the other class differ (median Spearman {rho:.2f}"
            + ("; the mirror image, as expected of a two-class model" if mirrored else "")
            + "): they are class-specific."
        )
    elif n_outputs == 2 and magnitude_maps:
        out["status"] = "inconclusive"
        out["reason"] = (
            f"Its maps for the other class are similar (median Spearman {rho:.2f}), but they "
            "carry no sign and this is a two-class model, whose other-class maps are close to "
            "the mirror image: the random-label check cannot tell and does not count."
        )
    else:
        out["status"] = "fail"
        out["reason"] = (
            f"Its maps for a random other class are the same too (median Spearman {rho:.2f} "
            f">= {threshold}): they do not show class-specific evidence, which fails the "
            "random-label check."
        )
    return out


@dataclass
class SanityResult:
    """Outcome of the model-parameter randomisation test.

    Attributes
    ----------
    steps : DataFrame
        Per method and step: layer randomised (cumulative for the cascade), mean and median
        of each similarity (``spearman``: signed maps; ``spearman_abs``; ``ssim``) vs the
        original maps. Step 0 is the unmodified copy (checks that the explainer is
        deterministic).
    per_image : DataFrame
        The per-image similarities behind ``steps``.
    passed : dict of str to bool
        Per method: the maps changed over the cascade (:func:`cascade_verdict`) and the
        random-label check did not fail (:func:`label_verdict`).
    reason : dict of str to str
        Per method, a plain-language verdict naming the rule's deciding numbers.
    label_check : DataFrame or None
        Random-label-logit check per method: median similarities, ``status`` (pass, fail,
        inconclusive) and ``class_sensitive`` (status is pass).
    maps : dict of str to ndarray
        Per method ``(1 + n_layers) x k x ...`` maps of the first ``k`` images: the original
        maps, then one per randomisation step (for plotting).
    params : dict
    verdicts : dict of str to dict
        Per method: the cascade verdict (``auc``, ``final``, ``top``, ``first_changed_step``
        ...; see :func:`cascade_verdict`) and ``label`` (the label verdict or None).
    """

    steps: pd.DataFrame
    per_image: pd.DataFrame
    passed: dict[str, bool]
    reason: dict[str, str]
    label_check: pd.DataFrame | None
    maps: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def rule(self) -> str:
        """The verdict rule in words, with this run's threshold."""
        return RULE.format(threshold=self.params.get("threshold", DEFAULT_THRESHOLD))

    def final_per_image(self) -> pd.DataFrame:
        """One row per image: each method's similarities at the last step (for ``by_subgroup``)."""
        last = self.per_image[self.per_image["step"] == self.per_image["step"].max()]
        metrics = [c for c in METRICS if c in last.columns]
        wide = last.pivot(index="image", columns="method", values=metrics)
        wide.columns = [f"{method}_{metric}" for metric, method in wide.columns]
        return wide.sort_index().reset_index()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no maps)."""

        def records(df: pd.DataFrame | None) -> list[dict[str, Any]] | None:
            if df is None:
                return None
            return [{k: _py(v) for k, v in r.items()} for r in df.to_dict("records")]

        def plain(v: Any) -> Any:
            return {k: plain(w) for k, w in v.items()} if isinstance(v, dict) else _py(v)

        return {
            "metric": "sanity_check",
            "rule": self.rule,
            "passed": {k: bool(v) for k, v in self.passed.items()},
            "reason": dict(self.reason),
            "verdicts": plain(self.verdicts),
            "steps": records(self.steps),
            "label_check": records(self.label_check),
            "params": {k: _py(v) for k, v in self.params.items()},
        }

    def plot(self, image: int = 0, **kwargs: Any) -> Any:
        """Strip of maps per randomisation step (one row per method) for one image."""
        from .plots import plot_sanity

        return plot_sanity(self, image=image, **kwargs)


def sanity_check(
    model: Any,
    images: Any,
    explainer: Any = "gradcam",
    targets: Any = None,
    *,
    layers: str | Sequence[str] = "cascade",
    metrics: Sequence[str] = METRICS,
    threshold: float = DEFAULT_THRESHOLD,
    random_state: int = 0,
    random_label: bool = True,
    keep_maps: int = 4,
    explainer_params: Mapping[str, Any] | None = None,
) -> SanityResult:
    """Cascading model-parameter randomisation test of one or more explainers.

    Parameters
    ----------
    model : ModelAdapter or torch.nn.Module
        Never modified: every randomisation happens on a deep copy (its state-dict hash is
        checked before and after).
    images : tensor or array ``N x C x H x W``
        A modest sample is enough (e.g. 16-64 images).
    explainer : str, callable, or a list / dict of them, default "gradcam"
        A method name for :func:`xai_audit.explain.explain`, or ``f(adapter, images,
        targets) -> maps``.
    targets : optional
        Class explained per image; default the original model's prediction (kept fixed at
        every step, so only the weights change).
    layers : "cascade", "independent" or list of layer names, default "cascade"
        ``"cascade"``: every layer with parameters, randomised cumulatively from the output
        down; a list: those layers, cumulatively, in the given order; ``"independent"``:
        each layer alone on a fresh copy.
    metrics : subset of ("spearman", "spearman_abs", "ssim")
        Similarities to compute: Spearman rank correlation of the signed maps, of their
        absolute values, and SSIM. The first one decides the pass.
    threshold : float, default 0.5
        Cascade: a method passes when the deciding metric's per-step median is below it on
        average over the cascade, or falls below it within the top half of the cascade and
        is below it at the fully randomised step (:func:`cascade_verdict`). ``"independent"``: when the most changed step is below
        it. The random-label check fails a method whose other-class maps reach it
        (:func:`label_verdict`).
    random_state : int, default 0
        Seeds re-initialisation and the random labels.
    random_label : bool, default True
        Also run the random-label-logit check (models with two or more outputs); a "fail"
        fails the method.
    keep_maps : int, default 4
        Images whose maps are kept for :meth:`SanityResult.plot`.
    explainer_params : dict, optional
        Passed to ``explain`` for named methods.

    Returns
    -------
    SanityResult
    """
    t0 = time.perf_counter()
    metrics = tuple(metrics)
    if not metrics or any(m not in METRICS for m in metrics):
        raise ValueError(f"metrics must be a non-empty subset of {METRICS}; got {metrics}.")
    adapter = as_adapter(model)
    x = as_image_tensor(images)
    spatial = tuple(x.shape[2:])
    explainers = _resolve_explainers(explainer, explainer_params or {})
    tgt = resolve_targets(adapter, x, targets)
    hash_before = adapter.model_hash()

    all_layers = randomisable_layers(adapter.model)
    if not all_layers:
        raise ValueError("The model has no parameters to randomise.")
    if isinstance(layers, str) and layers in ("cascade", "independent"):
        chosen = [name for name, _ in reversed(all_layers)]
        independent = layers == "independent"
    elif isinstance(layers, str):
        raise ValueError(
            f"layers must be 'cascade', 'independent' or a list of names; got {layers!r}."
        )
    else:
        names = dict(all_layers)
        unknown = [n for n in layers if n not in names]
        if unknown:
            raise ValueError(
                f"Layers {unknown} have no parameters of their own; choose from {list(names)}."
            )
        chosen = list(layers)
        independent = False
    try:  # resolve the CAM layer once, on the trained model, so copies inherit it
        adapter.target_layer(x[:1])
    except Exception:  # noqa: BLE001 - models without a spatial layer; explainers will say
        pass

    def run(name: str, a: Any, labels: np.ndarray) -> np.ndarray:
        maps = as_maps(
            explainers[name](a, x, labels), spatial_shape=spatial, name=f"maps of {name}"
        )
        if len(maps) != len(x):
            raise ValueError(f"Explainer {name!r} returned {len(maps)} maps for {len(x)} images.")
        return maps

    original = {name: run(name, adapter, tgt) for name in explainers}
    step_labels = ["none (copy)"]
    per_image: list[pd.DataFrame] = []
    kept = {name: [original[name][:keep_maps]] for name in explainers}
    sims: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in explainers}

    def record(step_maps: dict[str, np.ndarray], keep: bool = True) -> None:
        for name, m in step_maps.items():
            sims[name].append(_compare(original[name], m))
            if keep:
                kept[name].append(m[:keep_maps])

    copy_ = copy.deepcopy(adapter)
    record({name: run(name, copy_, tgt) for name in explainers}, keep=False)
    named = dict(randomisable_layers(copy_.model))
    for step, layer in enumerate(chosen, start=1):
        if independent:
            copy_ = copy.deepcopy(adapter)
            named = dict(randomisable_layers(copy_.model))
        randomise_layer(named[layer], seed=random_state * 10_007 + step)
        step_labels.append(layer)
        record({name: run(name, copy_, tgt) for name in explainers})
    del copy_

    step_rows = []
    passed: dict[str, bool] = {}
    reason: dict[str, str] = {}
    verdicts: dict[str, dict[str, Any]] = {}
    deciding = metrics[0]
    for name in explainers:
        for step, values in enumerate(sims[name]):
            row: dict[str, Any] = {
                "method": name,
                "step": step,
                "layer": step_labels[step],
                "n_randomised": step if not independent else int(step > 0),
            }
            for metric in metrics:
                v = values[metric]
                row[f"{metric}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
                row[f"{metric}_median"] = _median(v)
            step_rows.append(row)
            per_image.append(
                pd.DataFrame(
                    {
                        "method": name,
                        "step": step,
                        "layer": step_labels[step],
                        "image": np.arange(len(x)),
                        **{m: values[m] for m in metrics},
                    }
                )
            )
        medians = [_median(values[deciding]) for values in sims[name][1:]]
        if independent:
            verdict = _independent_verdict(name, medians, chosen, deciding, threshold)
        else:
            verdict = cascade_verdict(
                medians, chosen, threshold=threshold, metric=deciding, method=name
            )
        verdict["label"] = None
        verdicts[name] = verdict
        passed[name] = bool(verdict["passed"])
        reason[name] = verdict["reason"]

    label_check = None
    if random_label:
        n_out = adapter.n_outputs or adapter.predict_logits(x[:1]).shape[1]
        if n_out >= 2:
            rng = np.random.default_rng(random_state)
            other = (tgt + rng.integers(1, n_out, size=len(tgt))) % n_out
            rows = []
            for name in explainers:
                other_maps = run(name, adapter, other)
                sim = _compare(original[name], other_maps)
                lv = label_verdict(
                    _median(sim["spearman"]),
                    n_outputs=int(n_out),
                    magnitude_maps=bool(original[name].min() >= 0 and other_maps.min() >= 0),
                    threshold=threshold,
                    method=name,
                )
                rows.append(
                    {
                        "method": name,
                        "spearman_median": _median(sim["spearman"]),
                        "spearman_abs_median": _median(sim["spearman_abs"]),
                        "ssim_median": _median(sim["ssim"]),
                        "status": lv["status"],
                        "class_sensitive": lv["status"] == "pass",
                    }
                )
                verdicts[name]["label"] = lv
                reason[name] += " " + lv["reason"]
                if lv["status"] == "fail":
                    if passed[name]:
                        reason[name] = f"{name} fails the random-label check. " + reason[name]
                    passed[name] = False
            label_check = pd.DataFrame(rows)

    if adapter.model_hash() != hash_before:
        raise RuntimeError(
            "The model's weights changed during the sanity check; please report this bug."
        )
    return SanityResult(
        steps=pd.DataFrame(step_rows),
        per_image=pd.concat(per_image, ignore_index=True),
        passed=passed,
        reason=reason,
        label_check=label_check,
        maps={name: np.stack(kept[name]) for name in explainers},
        verdicts=verdicts,
        params={
            "layers": "independent"
            if independent
            else ("cascade" if layers == "cascade" else list(chosen)),
            "layer_order": list(chosen),
            "metrics": list(metrics),
            "threshold": threshold,
            "top_fraction": TOP_FRACTION,
            "random_state": random_state,
            "n_images": len(x),
            "model_sha256": hash_before,
            "seconds": time.perf_counter() - t0,
        },
    )


def _independent_verdict(
    name: str, medians: list[float], layers: Sequence[str], metric: str, threshold: float
) -> dict[str, Any]:
    """``layers="independent"``: pass when randomising some single layer changes the maps."""
    arr = np.asarray(medians, dtype=np.float64)
    out: dict[str, Any] = {"metric": metric, "threshold": float(threshold), "passed": None}
    if not np.isfinite(arr).any():
        out["reason"] = (
            f"{name}: the {metric} similarity is undefined (constant maps); the check cannot "
            "tell whether the maps depend on the model."
        )
        return out
    k = int(np.nanargmin(arr))
    out.update(final=float(arr[k]), most_changed_layer=str(layers[k]))
    out["passed"] = bool(arr[k] < threshold)
    verb = "passes" if out["passed"] else "fails"
    out["reason"] = (
        f"{name} {verb} the independent randomisation check: re-initialising {layers[k]} "
        f"alone changes the maps most (median {metric} {arr[k]:.2f}, threshold {threshold})."
    )
    return out
