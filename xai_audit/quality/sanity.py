"""Sanity checks for saliency maps (Adebayo et al., 2018).

Model-parameter randomisation: the model is copied, its layers with parameters are
re-initialised one after another from the output layer down (cascading), and after every
step the maps are recomputed with the same explainer and compared with the original maps.
An explanation that reflects what the model learned must change; one that does not (an
edge detector, for instance) is explaining the image, not the model, and fails.

The cheap stand-in for Adebayo's data-randomisation test (retraining on shuffled labels is
too expensive for an audit) is the random-label-logit check: explain a randomly chosen
*other* class and compare. Maps that barely change are not class-specific; it is reported
for information and does not decide the pass.
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

#: Median Spearman correlation (original vs fully randomised model) below which a method
#: passes. Adebayo et al. show model-dependent maps falling to |rho| ~ 0-0.3 while edge
#: detectors and input-dominated methods stay near 0.8-1; 0.5 sits between them.
DEFAULT_THRESHOLD = 0.5


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


def _compare(original: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image Spearman (of |maps|) and SSIM (of maps scaled to [0, 1])."""
    a, b = np.abs(original), np.abs(new)
    rho = spearman_rows(a, b)
    flat_a = a.reshape(len(a), -1)
    flat_b = b.reshape(len(b), -1)
    # A map that became flat (e.g. Grad-CAM dying to zero) has changed: no rank agreement.
    became_flat = (np.ptp(flat_b, axis=1) == 0) & (np.ptp(flat_a, axis=1) > 0)
    rho[became_flat] = 0.0
    ssim = ssim_rows(normalise_unit(original), normalise_unit(new))
    return rho, ssim


@dataclass
class SanityResult:
    """Outcome of the model-parameter randomisation test.

    Attributes
    ----------
    steps : DataFrame
        Per method and step: layer randomised (cumulative for the cascade), mean and median
        Spearman and SSIM vs the original maps. Step 0 is the unmodified copy (checks that
        the explainer is deterministic).
    per_image : DataFrame
        The per-image similarities behind ``steps``.
    passed : dict of str to bool
        Per method: the maps changed under full randomisation.
    reason : dict of str to str
        Per method, a plain-language verdict.
    label_check : DataFrame or None
        Random-label-logit check per method (informational).
    maps : dict of str to ndarray
        Per method ``(1 + n_layers) x k x ...`` maps of the first ``k`` images: the original
        maps, then one per randomisation step (for plotting).
    params : dict
    """

    steps: pd.DataFrame
    per_image: pd.DataFrame
    passed: dict[str, bool]
    reason: dict[str, str]
    label_check: pd.DataFrame | None
    maps: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)

    def final_per_image(self) -> pd.DataFrame:
        """One row per image: each method's similarities at the last step (for ``by_subgroup``)."""
        last = self.per_image[self.per_image["step"] == self.per_image["step"].max()]
        metrics = [c for c in ("spearman", "ssim") if c in last.columns]
        wide = last.pivot(index="image", columns="method", values=metrics)
        wide.columns = [f"{method}_{metric}" for metric, method in wide.columns]
        return wide.sort_index().reset_index()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no maps)."""

        def records(df: pd.DataFrame | None) -> list[dict[str, Any]] | None:
            if df is None:
                return None
            return [{k: _py(v) for k, v in r.items()} for r in df.to_dict("records")]

        return {
            "metric": "sanity_check",
            "passed": {k: bool(v) for k, v in self.passed.items()},
            "reason": dict(self.reason),
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
    metrics: Sequence[str] = ("spearman", "ssim"),
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
    metrics : subset of ("spearman", "ssim")
        The first one decides the pass.
    threshold : float, default 0.5
        A method passes when the median of the deciding metric at the fully randomised step
        (for ``"independent"``: the most changed step) is below it.
    random_state : int, default 0
        Seeds re-initialisation and the random labels.
    random_label : bool, default True
        Also run the random-label-logit check (models with two or more outputs).
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
    if not metrics or any(m not in ("spearman", "ssim") for m in metrics):
        raise ValueError(
            f"metrics must be a non-empty subset of ('spearman', 'ssim'); got {metrics}."
        )
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
    sims: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {name: [] for name in explainers}

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
    deciding = metrics[0]
    for name in explainers:
        for step, (rho, ssim) in enumerate(sims[name]):
            values = {"spearman": rho, "ssim": ssim}
            row: dict[str, Any] = {
                "method": name,
                "step": step,
                "layer": step_labels[step],
                "n_randomised": step if not independent else int(step > 0),
            }
            for metric in metrics:
                v = values[metric]
                row[f"{metric}_mean"] = float(np.nanmean(v)) if np.isfinite(v).any() else np.nan
                row[f"{metric}_median"] = float(np.nanmedian(v)) if np.isfinite(v).any() else np.nan
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
        medians = [
            r[f"{deciding}_median"] for r in step_rows if r["method"] == name and r["step"] > 0
        ]
        final = float(np.nanmin(medians)) if independent else medians[-1]
        label = "independent" if independent else "cascading"
        if not np.isfinite(final):
            passed[name] = False
            reason[name] = (
                f"{name}: the {deciding} similarity is undefined (constant maps before "
                "randomisation); the check cannot tell whether the maps depend on the model."
            )
        elif final < threshold:
            passed[name] = True
            reason[name] = (
                f"{name} passes: after {label} randomisation of {len(chosen)} layer(s) the "
                f"maps changed (median {deciding} {final:.2f} < {threshold}), so they depend "
                "on the learned weights."
            )
        else:
            passed[name] = False
            reason[name] = (
                f"{name} fails: after {label} randomisation of {len(chosen)} layer(s) the maps "
                f"barely changed (median {deciding} {final:.2f} >= {threshold}). They reflect "
                "the input image rather than the model; do not present them as explanations "
                "of this model."
            )

    label_check = None
    if random_label:
        n_out = adapter.n_outputs or adapter.predict_logits(x[:1]).shape[1]
        if n_out >= 2:
            rng = np.random.default_rng(random_state)
            other = (tgt + rng.integers(1, n_out, size=len(tgt))) % n_out
            rows = []
            for name in explainers:
                rho, ssim = _compare(original[name], run(name, adapter, other))
                rows.append(
                    {
                        "method": name,
                        "spearman_median": float(np.nanmedian(rho))
                        if np.isfinite(rho).any()
                        else np.nan,
                        "ssim_median": float(np.nanmedian(ssim)),
                        "class_sensitive": bool(np.nanmedian(rho) < threshold)
                        if np.isfinite(rho).any()
                        else False,
                    }
                )
                if not rows[-1]["class_sensitive"]:
                    reason[name] += (
                        " Its maps for a random other class are similar too (median Spearman "
                        f"{rows[-1]['spearman_median']:.2f}): they do not show class-specific evidence."
                    )
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
        params={
            "layers": "independent"
            if independent
            else ("cascade" if layers == "cascade" else list(chosen)),
            "layer_order": list(chosen),
            "metrics": list(metrics),
            "threshold": threshold,
            "random_state": random_state,
            "n_images": len(x),
            "model_sha256": hash_before,
            "seconds": time.perf_counter() - t0,
        },
    )
