"""The attribution result, the explainer base class and the registry of methods."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

from ..model import ModelAdapter

Normalization = Literal["minmax", "abs", "positive"]
ChannelReduction = Literal["sum", "abs_sum", "mean"]
_CHANNEL_REDUCTIONS = ("sum", "abs_sum", "mean")


# ---------------------------------------------------------------------------------- result
@dataclass
class Attribution:
    """Attribution maps for a set of images, with what produced them.

    Attributes
    ----------
    maps : numpy.ndarray
        float32 maps at input resolution: ``(N, H, W)`` or ``(N, D, H, W)``; with
        ``target="all"`` one map per label: ``(N, L, H, W)`` / ``(N, L, D, H, W)``.
    targets : numpy.ndarray
        int64 class index explained per item: ``(N,)`` or ``(N, L)``.
    method : str
        Canonical method name (e.g. ``"gradcam"``).
    params : dict
        The method's parameters with defaults filled in (JSON-serialisable).
    target_layer : str or None
        Layer explained by CAM methods (several joined by ``"+"``), else None.
    scores : numpy.ndarray or None
        The model's score (after its output activation) for each explained target, shaped
        like ``targets``.
    class_names : list of str or None
        The model's class names, so that ``targets`` can be read.
    normalization : str or None
        How the maps were rescaled (see :meth:`normalized`), None for raw attributions.
    """

    maps: np.ndarray
    targets: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    target_layer: str | None = None
    scores: np.ndarray | None = None
    class_names: list[str] | None = None
    normalization: str | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Attribution:
        """The attribution of a subset of items (an int keeps a batch axis of length 1)."""
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"Item {i} is out of range for {len(self)} attributions.")
            index = slice(i, i + 1 if i != -1 else None)
        return replace(
            self,
            maps=self.maps[index],
            targets=self.targets[index],
            scores=None if self.scores is None else self.scores[index],
        )

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of one map (``H, W`` or ``D, H, W``)."""
        lead = 2 if self.targets.ndim == 2 else 1
        return tuple(self.maps.shape[lead:])

    def normalized(self, mode: Normalization = "minmax", eps: float = 1e-12) -> Attribution:
        """Rescale every map independently to ``[0, 1]``.

        Parameters
        ----------
        mode : {"minmax", "abs", "positive"}
            ``"minmax"``: ``(m - min) / (max - min)``; ``"abs"``: ``|m| / max|m|`` (sign
            dropped, for signed methods such as integrated gradients); ``"positive"``: negative
            evidence clipped to 0, then divided by the maximum.
        eps : float
            Constant maps (e.g. an all-zero CAM) become all zeros instead of NaN.

        Returns
        -------
        Attribution
            A copy with rescaled maps and ``normalization`` set.
        """
        lead = self.targets.ndim
        flat = self.maps.reshape(*self.maps.shape[:lead], -1).astype(np.float32)
        if mode == "minmax":
            low = flat.min(axis=-1, keepdims=True)
            out = (flat - low) / np.maximum(flat.max(axis=-1, keepdims=True) - low, eps)
        elif mode == "abs":
            mag = np.abs(flat)
            out = mag / np.maximum(mag.max(axis=-1, keepdims=True), eps)
        elif mode == "positive":
            pos = np.clip(flat, 0, None)
            out = pos / np.maximum(pos.max(axis=-1, keepdims=True), eps)
        else:
            raise ValueError(f"mode must be 'minmax', 'abs' or 'positive', got {mode!r}.")
        return replace(
            self, maps=out.reshape(self.maps.shape).astype(np.float32), normalization=mode
        )

    def to_dict(self) -> dict[str, Any]:
        """Everything except the maps, JSON-serialisable."""
        return {
            "method": self.method,
            "params": self.params,
            "target_layer": self.target_layer,
            "targets": self.targets.tolist(),
            "scores": None if self.scores is None else np.asarray(self.scores).tolist(),
            "class_names": self.class_names,
            "normalization": self.normalization,
            "n_items": len(self),
            "map_shape": list(self.maps.shape),
        }

    def save(self, path: str | Path) -> Path:
        """Write maps and metadata to one ``.npz`` file (read back with :meth:`load`)."""
        path = Path(path)
        arrays = {"maps": self.maps, "targets": self.targets}
        if self.scores is not None:
            arrays["scores"] = np.asarray(self.scores)
        meta = {k: v for k, v in self.to_dict().items() if k not in ("targets", "scores")}
        np.savez_compressed(path, meta=np.array(json.dumps(meta)), **arrays)
        return path if path.suffix == ".npz" else path.with_suffix(path.suffix + ".npz")

    @classmethod
    def load(cls, path: str | Path) -> Attribution:
        """Read an attribution written by :meth:`save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(
                maps=data["maps"],
                targets=data["targets"],
                scores=data["scores"] if "scores" in data else None,
                method=meta["method"],
                params=meta["params"],
                target_layer=meta["target_layer"],
                class_names=meta["class_names"],
                normalization=meta["normalization"],
            )

    def __repr__(self) -> str:
        return (
            f"Attribution(method={self.method!r}, maps={self.maps.shape}, "
            f"target_layer={self.target_layer!r}, normalization={self.normalization!r})"
        )


# ---------------------------------------------------------------------------------- helpers
def reduce_channels(attr: torch.Tensor, how: str) -> torch.Tensor:
    """``N x C x ...`` pixel attributions to ``N x ...`` maps.

    The sum over channels keeps completeness (the map still sums to the total attribution);
    ``"abs_sum"`` sums magnitudes, for methods whose per-channel signs cancel.
    """
    if how == "sum":
        return attr.sum(dim=1)
    if how == "abs_sum":
        return attr.abs().sum(dim=1)
    if how == "mean":
        return attr.mean(dim=1)
    raise ValueError(f"channel_reduction must be one of {_CHANNEL_REDUCTIONS}, got {how!r}.")


def predicted_targets(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class per item: the arg-max output (output 0 of a single-logit model).

    For multi-label models this is the highest-scoring label (activations are monotone, so
    the arg-max of logits equals that of the scores).
    """
    if logits.shape[1] == 1:
        return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return logits.argmax(dim=1)


class TargetedForward:
    """A forward function returning each item's target logit (shape ``N``), for captum.

    Used by single-pass methods (one forward on the unperturbed batch): when no targets are
    given, the predicted classes are read from that same forward pass instead of a second
    one, and the logits are kept for the scores.
    """

    def __init__(self, adapter: ModelAdapter, targets: torch.Tensor | None) -> None:
        self.adapter = adapter
        self.targets = targets
        self.logits: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.adapter.forward(x)
        if self.logits is None:
            self.logits = logits.detach()
            if self.targets is None:
                self.targets = predicted_targets(self.logits)
        assert self.targets is not None
        if logits.shape[0] != self.targets.shape[0]:
            raise RuntimeError("TargetedForward serves single-pass methods only.")
        return logits.gather(1, self.targets[:, None]).squeeze(1)


def _jsonable(value: Any) -> Any:
    """Parameter values as JSON: tensors/arrays by shape, modules and callables by name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (torch.Tensor, np.ndarray)):
        return f"array(shape={list(value.shape)})"
    if isinstance(value, nn.Module):
        return type(value).__name__
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    return repr(value)


# ---------------------------------------------------------------------------------- base class
class Explainer:
    """One attribution method: a name, parameters with defaults and an ``attribute`` step.

    Subclasses set the class attributes and implement :meth:`attribute`. They are created
    per :func:`~xai_audit.explain.explain` call with the user's parameters, :meth:`setup` runs
    once on the first batch, then :meth:`explain_batch` per batch.

    Attributes
    ----------
    name : str
        Canonical name used in :func:`explain` and recorded in results.
    aliases : tuple of str
        Other accepted names.
    defaults : dict
        Every parameter the method accepts, with its default.
    param_aliases : dict
        Alternative parameter names (e.g. captum's) mapped to the canonical ones.
    supports_3d : bool
        Whether the method works on ``N x C x D x H x W`` volumes.
    single_pass : bool
        The method runs exactly one forward pass on the unperturbed batch, so the
        predicted class can be read from it (see :meth:`explain_batch`).
    removes_own_hooks : bool
        Every hook the method registers (its own or captum's) is removed in a ``finally``
        clause. :func:`explain` then skips its safety net (:func:`~.hooks.hook_guard`, a walk
        over every module before and after the call: milliseconds on a DenseNet, as much as
        a small batch's attribution). False by default, so methods registered by users and
        third-party code (shap) keep the net.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    defaults: ClassVar[dict[str, Any]] = {}
    param_aliases: ClassVar[dict[str, str]] = {}
    supports_3d: ClassVar[bool] = True
    removes_own_hooks: ClassVar[bool] = False
    single_pass: ClassVar[bool] = False
    description: ClassVar[str] = ""

    def __init__(self, **params: Any) -> None:
        known = dict(self.defaults)
        for key, value in params.items():
            canonical = self.param_aliases.get(key, key)
            if canonical not in known:
                raise TypeError(
                    f"{self.name} got an unknown parameter {key!r}; it accepts "
                    f"{sorted(self.defaults)}"
                    + (f" (aliases: {self.param_aliases})" if self.param_aliases else "")
                    + "."
                )
            known[canonical] = value
        if "channel_reduction" in known and known["channel_reduction"] not in _CHANNEL_REDUCTIONS:
            raise ValueError(
                f"channel_reduction must be one of {_CHANNEL_REDUCTIONS}, got "
                f"{known['channel_reduction']!r}."
            )
        self.params: dict[str, Any] = known
        self.target_layer_name: str | None = None
        # Global positions of the current batch's images (set by explain()); seeded methods
        # draw each image's noise from its position so that batching changes nothing.
        self._indices: torch.Tensor | None = None
        self._index_range: tuple[int, int] | None = None
        # The batch's raw model outputs when the caller already has them (explain(logits=)):
        # the default explain_batch then skips its extra forward pass.
        self.batch_logits: torch.Tensor | None = None

    @property
    def indices(self) -> torch.Tensor | None:
        """Global positions of the current batch's images (set by :func:`explain`), or None.

        Built on first use: most methods never read them, and a tensor op costs ~10 us of a
        small call.
        """
        if self._indices is None and self._index_range is not None:
            self._indices = torch.arange(*self._index_range)
        return self._indices

    @indices.setter
    def indices(self, value: torch.Tensor | None) -> None:
        self._indices = value
        self._index_range = None

    def set_batch_range(self, start: int, stop: int) -> None:
        """The current batch holds the images ``start:stop`` of the call (see :attr:`indices`)."""
        self._indices = None
        self._index_range = (int(start), int(stop))

    def batch_indices(self, x: torch.Tensor) -> torch.Tensor:
        """Global positions of the images in ``x`` (``0..N-1`` outside :func:`explain`)."""
        if self.indices is not None and self.indices.numel() == x.shape[0]:
            return self.indices
        return torch.arange(x.shape[0])

    # -- hooks for subclasses
    def setup(self, adapter: ModelAdapter, example: torch.Tensor) -> None:
        """Prepare once per call (resolve layers, check parameters) given the first batch."""

    def attribute(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Attribution maps ``N x *spatial`` at input resolution for a prepared batch.

        Parameters
        ----------
        adapter : ModelAdapter
            The wrapped model (``adapter.module`` is the differentiable forward function).
        x : torch.Tensor
            ``N x C x H x W`` or ``N x C x D x H x W`` on the adapter's device.
        targets : torch.Tensor
            int64 ``N``: the class explained for each item.
        """
        raise NotImplementedError

    def explain_batch(
        self, adapter: ModelAdapter, x: torch.Tensor, targets: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Maps, targets and logits for one batch; ``targets=None`` means predicted class.

        The default costs one extra no-grad forward pass to learn targets and logits (unless
        :func:`explain` was given them); single-pass methods override it to read both from
        their own forward pass.
        """
        logits = self.batch_logits
        if logits is None:
            with torch.no_grad():
                logits = adapter.forward(x)
        if targets is None:
            targets = predicted_targets(logits)
        return self.attribute(adapter, x, targets), targets, logits

    def json_params(self) -> dict[str, Any]:
        """The parameters in JSON form (arrays and modules described, not stored)."""
        out = {k: _jsonable(v) for k, v in self.params.items()}
        if "target_layer" in out and self.target_layer_name is not None:
            out["target_layer"] = self.target_layer_name
        return out


# ---------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Explainer]] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_").replace(" ", "_")


def register_method(
    cls: type[Explainer] | None = None, *, overwrite: bool = False
) -> Callable[[type[Explainer]], type[Explainer]] | type[Explainer]:
    """Add an :class:`Explainer` subclass to the registry (usable as a class decorator).

    Parameters
    ----------
    cls : type
        The explainer class; its ``name`` and ``aliases`` become valid ``method=`` values.
    overwrite : bool, default False
        Replace an existing method of the same name instead of raising.
    """

    def add(explainer: type[Explainer]) -> type[Explainer]:
        if not (isinstance(explainer, type) and issubclass(explainer, Explainer)):
            raise TypeError("register_method expects a subclass of xai_audit.explain.Explainer.")
        if not explainer.name:
            raise ValueError(f"{explainer.__name__} needs a non-empty `name`.")
        names = [_key(explainer.name), *(_key(a) for a in explainer.aliases)]
        for n in names:
            owner = _ALIASES.get(n)
            if owner is not None and _REGISTRY[owner] is not explainer and not overwrite:
                raise ValueError(
                    f"Method name {n!r} is already registered (by {owner!r}); pass "
                    "overwrite=True to replace it."
                )
        _REGISTRY[names[0]] = explainer
        for n in names:
            _ALIASES[n] = names[0]
        return explainer

    return add(cls) if cls is not None else add


def available_methods(*, with_aliases: bool = False) -> list[str] | dict[str, list[str]]:
    """Names of the registered methods (sorted), or ``{name: aliases}``."""
    if with_aliases:
        return {
            n: [a for a, o in sorted(_ALIASES.items()) if o == n and a != n]
            for n in sorted(_REGISTRY)
        }
    return sorted(_REGISTRY)


def get_method(name: str) -> type[Explainer]:
    """The explainer class registered under ``name`` or one of its aliases."""
    if isinstance(name, type) and issubclass(name, Explainer):
        return name
    if not isinstance(name, str):
        raise TypeError(f"method must be a string, got {type(name).__name__}.")
    key = _ALIASES.get(_key(name))
    if key is None:
        listing = ", ".join(
            f"{n} ({', '.join(a)})" if a else n
            for n, a in available_methods(with_aliases=True).items()  # type: ignore[union-attr]
        )
        raise ValueError(f"Unknown explanation method {name!r}. Known methods: {listing}.")
    return _REGISTRY[key]
