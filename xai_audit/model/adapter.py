"""ModelAdapter: one wrapper that every other part of xai_audit talks to."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .batching import iter_image_batches, n_items
from .layers import (
    ReshapeTransform,
    TargetLayerError,
    choose_target_layer,
    layer_reshape,
    resolve_layer,
)
from .state import eval_mode, submodules

Activation = Literal["softmax", "sigmoid", "identity"]
_ACTIVATIONS = ("softmax", "sigmoid", "identity")


class NonFiniteError(ValueError):
    """Images or model outputs contain NaN or infinite values."""


class ModelOutputError(ValueError):
    """The model's output is not ``N x K`` floating-point logits, one row per image."""


class _FirstLayerMismatch(ValueError):
    """Raised by the probe's hook when the first conv/linear layer cannot take the input."""


def _output_problem(out: object, n: int) -> str | None:
    """What is wrong with a model output for ``n`` images (None when it is usable logits)."""
    if not isinstance(out, torch.Tensor):
        return (
            f"The model returned {type(out).__name__}, not a tensor; ModelAdapter needs N x K "
            "logits (a tensor, or a tuple whose first item / a dict whose 'logits' entry is one)."
        )
    shape = tuple(out.shape)
    if out.ndim == 0 or out.ndim > 2:
        return (
            f"The model returned outputs of shape {shape} for {n} images; ModelAdapter needs "
            "N x K logits (one row per image). Flatten or squeeze the extra axes in the model "
            "(e.g. return out.flatten(1), or wrap it: nn.Sequential(model, nn.Flatten()))."
        )
    if shape[0] != n:
        return (
            f"The model returned {shape[0]} rows of outputs (shape {shape}) for {n} images; it "
            "must return one row per image. Look for a reduction over the batch axis (e.g. "
            ".mean(0)), a reshape with a fixed batch size, or a dropped row in forward()."
        )
    if not out.is_floating_point():
        return (
            f"The model returned {str(out.dtype).replace('torch.', '')} outputs; ModelAdapter "
            "needs floating-point logits or scores, not class ids. Return the output before "
            "argmax/rounding (e.g. the last linear layer's output)."
        )
    return None


def _reaches_input(logits: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether a gradient flows from the logits back to ``x`` (the input or a layer output).

    ``logits.requires_grad`` alone is not enough: a backbone run under ``no_grad`` with a
    trainable head still gives a graph, but none that reaches the pixels. ``autograd.grad``
    with ``inputs=x`` leaves the parameters' ``.grad`` untouched.
    """
    if not logits.requires_grad:
        return False
    if not x.requires_grad:
        return False
    (grad,) = torch.autograd.grad(logits.sum(), x, allow_unused=True)
    return grad is not None


def _nonfinite_images_message(rows: list[int]) -> str:
    return (
        f"{len(rows)} image(s) contain NaN or infinite pixels (positions {rows[:5]}); fix or "
        "drop them before predicting."
    )


def _nonfinite_outputs_message(rows: list[int]) -> str:
    return (
        f"The model produced NaN or infinite outputs for {len(rows)} image(s) (positions "
        f"{rows[:5]}); check the model's weights and the preprocessing (e.g. division by a zero "
        "standard deviation)."
    )


class _PreprocessedModel(nn.Module):
    """``model(preprocess(x))`` as one module, so that attributions are in raw-input space."""

    def __init__(self, model: nn.Module, preprocess: Callable[[torch.Tensor], torch.Tensor] | None):
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        # The wrapper has no layers of its own; it starts in the model's mode, so that an
        # eval-mode model does not look like one in training (eval_mode skips its walk then).
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        out = self.model(x)
        if isinstance(out, (tuple, list)) and out:  # e.g. (logits, aux) from some networks
            out = out[0]
        if isinstance(out, dict):
            if "logits" not in out and "out" not in out:
                raise ModelOutputError(
                    f"The model returned a dict without a 'logits' or 'out' entry (keys: "
                    f"{sorted(map(str, out))}); return the logits tensor or name it 'logits'."
                )
            out = out.get("logits", out.get("out"))
        problem = _output_problem(out, x.shape[0])
        if problem is not None:  # fail here, not as an IndexError or autograd error later
            raise ModelOutputError(problem)
        if out.ndim == 1:  # a single-logit binary model returning shape (N,)
            out = out[:, None]
        return out


def _on_device(module: nn.Module, device: torch.device) -> bool:
    """Whether every parameter and buffer of ``module`` already lives on ``device``."""
    if device.type != "cpu" and device.index is None:
        return False  # "cuda" means the current device: let Module.to resolve it
    # One walk over the module dicts: parameters()/buffers() rebuild every dotted name.
    return all(
        t is None or t.device == device
        for m in submodules(module)
        for t in (*m._parameters.values(), *m._buffers.values())
    )


def _auto_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def nonfinite_rows(x: torch.Tensor, offset: int = 0) -> list[int]:
    """Positions (``offset`` + row) of the items of ``x`` holding a NaN or infinite value.

    The usual, all-finite batch costs one reduction: a sum is finite only if every element
    is (NaN and infinities propagate, and +inf + -inf is NaN). ``isfinite(x).all()`` writes
    a boolean copy of the batch and reads it again: 16x slower on a 32 x 3 x 224 x 224 batch
    (6.5 vs 0.4 ms here), and this runs on every batch of every prediction and explanation.
    Only a sum that overflows (or a real NaN) reaches the exact per-row test.
    """
    if not x.is_floating_point() or x.numel() == 0 or math.isfinite(float(x.sum())):
        return []
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
    return (torch.nonzero(bad).flatten() + offset).tolist()


class ModelAdapter:
    """Wrap any PyTorch imaging classifier for prediction and explanation.

    Parameters
    ----------
    model : torch.nn.Module
        A 2D (``N x C x H x W``) or 3D (``N x C x D x H x W``) classifier returning logits
        ``N x K`` (or ``N`` / ``N x 1`` for a single-logit binary model). It is moved to
        ``device``; its train/eval and ``requires_grad`` state is otherwise never changed.
    class_names : sequence of str, optional
        One name per output. Defaults to ``class_0 ... class_{K-1}`` once the output width is
        known (``["positive"]`` for a single-logit model).
    activation : {"softmax", "sigmoid", "identity"}, optional
        Maps logits to scores. Default: ``"sigmoid"`` for multi-label or single-logit models,
        otherwise ``"softmax"``.
    multi_label : bool, default False
        Outputs are independent labels (sigmoid), not mutually exclusive classes.
    preprocess : callable, optional
        Applied to every batch on the device before the model, inside the differentiable
        forward pass (so attributions are expressed in the raw image's pixels), e.g.
        intensity normalisation or resizing.
    target_layer : str or torch.nn.Module, optional
        Layer explained by CAM methods. Found automatically when not given: the last layer
        with a spatial output, or for a transformer (ViT, DeiT, Swin, MONAI ``ViT``) the first
        norm of its last block (see :func:`~xai_audit.model.layers.choose_target_layer`).
    reshape_transform : callable, optional
        Turns the target layer's output into ``N x C x h x w``. Inferred when not given for
        token layers (``N x T x D``: class/register tokens dropped, grid from the token count
        and the input size) and channels-last layers (Swin); give it for other layouts.
    device : str or torch.device, optional
        Default: CUDA when available, else CPU.
    batch_size : int, default 32
        Images per forward pass in :meth:`predict_proba` and explainers.
    positive_class : int or str, optional
        The class whose score a binary audit uses. Default: output 1 of a two-output softmax
        model, output 0 of a single-logit model.
    name, version : str, optional
        Recorded in reports.

    Examples
    --------
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
    ...                           torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
    ...                           torch.nn.Linear(4, 2))
    >>> model = ModelAdapter(net, class_names=["normal", "lesion"], device="cpu")
    >>> model.predict_proba(torch.zeros(3, 1, 16, 16)).shape
    (3, 2)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        class_names: Sequence[str] | None = None,
        activation: Activation | None = None,
        multi_label: bool = False,
        preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
        target_layer: str | nn.Module | None = None,
        reshape_transform: ReshapeTransform | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        positive_class: int | str | None = None,
        name: str | None = None,
        version: str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if activation is not None and activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {activation!r}.")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.device = torch.device(device) if device is not None else _auto_device()
        # Module.to walks every submodule in Python even when nothing moves (a third of a
        # small explain(bare_module, x) call, which wraps the module afresh each time).
        self.model = model if _on_device(model, self.device) else model.to(self.device)
        self.preprocess = preprocess
        self.module = _PreprocessedModel(self.model, preprocess)
        self.multi_label = bool(multi_label)
        self._activation = activation
        self._class_names = list(class_names) if class_names is not None else None
        self.batch_size = int(batch_size)
        self.reshape_transform = reshape_transform
        self.name = name or type(model).__name__
        self.version = version
        self._positive_class = positive_class
        self._n_outputs: int | None = len(class_names) if class_names is not None else None
        self._target_layer: tuple[str, nn.Module] | None = None
        # Reshapes inferred for token / channels-last layers: (layer name, input size) -> fn.
        self._auto_reshapes: dict[tuple[str, tuple[int, ...]], ReshapeTransform | None] = {}
        if target_layer is not None:
            self._target_layer = resolve_layer(self.model, target_layer)
        self.spatial_dims: int | None = None

    # ------------------------------------------------------------------ properties
    @property
    def activation(self) -> Activation:
        """The output activation in use."""
        if self._activation is not None:
            return self._activation
        if self.multi_label or self._n_outputs == 1:
            return "sigmoid"
        return "softmax"

    @property
    def n_outputs(self) -> int | None:
        """Width of the model's output (None until class names or one forward pass tell)."""
        return self._n_outputs

    @property
    def class_names(self) -> list[str]:
        """One name per output."""
        if self._class_names is not None:
            return list(self._class_names)
        if self._n_outputs is None:
            raise RuntimeError(
                "The number of outputs is not known yet: pass class_names or run predict first."
            )
        if self._n_outputs == 1:
            return ["positive"]
        return [f"class_{i}" for i in range(self._n_outputs)]

    @property
    def positive_index(self) -> int:
        """Index of the output whose score binary audits use."""
        if isinstance(self._positive_class, str):
            return self.class_index(self._positive_class)
        if self._positive_class is not None:
            return int(self._positive_class)
        if self._n_outputs == 1:
            return 0
        if self._n_outputs == 2 and not self.multi_label:
            return 1
        raise ValueError(
            f"The model has {self._n_outputs} outputs; say which one is the positive class "
            "with ModelAdapter(..., positive_class=<index or name>)."
        )

    def class_index(self, target: int | str) -> int:
        """Resolve a class given by name or index, with a clear error when out of range."""
        names = self.class_names
        if isinstance(target, str):
            if target not in names:
                raise ValueError(f"Unknown class {target!r}; the classes are {names}.")
            return names.index(target)
        index = int(target)
        if not 0 <= index < len(names):
            raise ValueError(
                f"Target class {index} is out of range: the model has {len(names)} outputs "
                f"({names})."
            )
        return index

    # ------------------------------------------------------------------ forward
    def prepare(self, batch: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate a batch's layout and move it to the device as float32.

        A batch without a channel axis (``N x H x W`` for a 2D model) gets one added once the
        model's dimensionality is known.
        """
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(np.ascontiguousarray(batch))
        if batch.ndim not in (3, 4, 5):
            raise ValueError(
                f"Images must be N x C x H x W (2D) or N x C x D x H x W (3D); got shape "
                f"{tuple(batch.shape)}."
            )
        if self.spatial_dims is not None and batch.ndim == self.spatial_dims + 1:
            batch = batch.unsqueeze(1)
        if batch.ndim == 3:
            raise ValueError(
                f"Got images of shape {tuple(batch.shape)} with no channel axis; add one "
                "(x[:, None]) so that they are N x C x H x W."
            )
        if self.spatial_dims is None:
            self.spatial_dims = batch.ndim - 2
        elif batch.ndim - 2 != self.spatial_dims:
            raise ValueError(
                f"This adapter has seen {self.spatial_dims}D images; got a batch of shape "
                f"{tuple(batch.shape)}."
            )
        return batch.to(self.device, dtype=torch.float32)

    def _record_outputs(self, logits: torch.Tensor) -> None:
        width = int(logits.shape[1])
        if self._n_outputs is None:
            self._n_outputs = width
        elif width != self._n_outputs:
            raise ModelOutputError(
                f"The model returned {width} outputs but {self._n_outputs} class names were "
                f"given ({self._class_names})."
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``N x K`` for a prepared batch, differentiable (used by explainers)."""
        logits = self.module(x)
        self._record_outputs(logits)
        return logits

    __call__ = forward

    def apply_activation(self, logits: torch.Tensor) -> torch.Tensor:
        """Turn logits into scores with the configured activation."""
        if self.activation == "softmax":
            return torch.softmax(logits, dim=1)
        if self.activation == "sigmoid":
            return torch.sigmoid(logits)
        return logits

    def _predict(
        self, images: Any, *, activation: bool, batch_size: int | None, progress: bool | None
    ) -> np.ndarray:
        batch_size = batch_size or self.batch_size
        total = n_items(images)
        n_batches = math.ceil(total / batch_size) if total is not None else None
        show = progress if progress is not None else bool(n_batches and n_batches > 10)
        outputs: list[np.ndarray] = []
        seen = 0
        with eval_mode(self.model), torch.inference_mode():
            bar = tqdm(total=total, disable=not show, desc="predict", unit="img", leave=False)
            try:
                for raw in iter_image_batches(images, batch_size):
                    x = self.prepare(raw)
                    bad_in = nonfinite_rows(x, seen)
                    if bad_in:
                        raise NonFiniteError(_nonfinite_images_message(bad_in))
                    logits = self.forward(x)
                    out = self.apply_activation(logits) if activation else logits
                    bad_out = nonfinite_rows(out, seen)
                    if bad_out:
                        raise NonFiniteError(_nonfinite_outputs_message(bad_out))
                    outputs.append(out.float().cpu().numpy())
                    seen += x.shape[0]
                    bar.update(x.shape[0])
            finally:
                bar.close()
        if not outputs:
            raise ValueError("No images were given.")
        return np.concatenate(outputs, axis=0)

    def predict_logits(
        self, images: Any, *, batch_size: int | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Raw model outputs ``N x K`` as float32 numpy, batched, without gradients.

        Parameters
        ----------
        images : tensor, array, Manifest, Dataset or DataLoader
            Images in the model's input layout.
        batch_size : int, optional
            Overrides the adapter's batch size.
        progress : bool, optional
            Show a progress bar (terminal or notebook). Default: only for more than 10 batches.
        """
        return self._predict(images, activation=False, batch_size=batch_size, progress=progress)

    def predict_proba(
        self, images: Any, *, batch_size: int | None = None, progress: bool | None = None
    ) -> np.ndarray:
        """Scores ``N x K`` after the output activation (probabilities for softmax/sigmoid)."""
        return self._predict(images, activation=True, batch_size=batch_size, progress=progress)

    def predict(
        self,
        images: Any,
        *,
        threshold: float = 0.5,
        batch_size: int | None = None,
        progress: bool | None = None,
    ) -> np.ndarray:
        """Predicted class indices ``N`` (or ``N x K`` 0/1 labels for multi-label models)."""
        scores = self.predict_proba(images, batch_size=batch_size, progress=progress)
        if self.multi_label or scores.shape[1] == 1:
            return (scores >= threshold).astype(np.int64)
        return scores.argmax(axis=1)

    def positive_scores(self, images: Any, **kwargs: Any) -> np.ndarray:
        """Score of :attr:`positive_index` per image (what binary audits threshold)."""
        return self.predict_proba(images, **kwargs)[:, self.positive_index]

    def check_inputs(
        self, images: Any, *, gradients: Literal["input", "layer"] | None = "input"
    ) -> list[str]:
        """What stops this model from working on these images, from one probe forward pass.

        Cheap (one forward and at most one backward pass on the images given; pass two or so)
        and run by :class:`~xai_audit.audit.Audit` before any work, so that a bad model or bad
        images give a diagnosis instead of an error deep inside a batch. Checks, in order: the
        batch layout (:meth:`prepare`), finite pixels, that the first convolution/linear layer
        the forward pass reaches gets the number of channels (features) it was built for, the
        output (one row per image, ``N x K`` floating point, as :meth:`forward` checks it, and
        as many outputs as class names), finite outputs, and that gradients flow as the
        explanation methods need.

        Parameters
        ----------
        images : tensor or array
            A few images in the layout the audit feeds the model.
        gradients : {"input", "layer", None}, default "input"
            ``"input"``: a gradient must reach the pixels (integrated gradients, saliency,
            SmoothGrad, guided and SHAP gradient methods); ``"layer"``: it must reach the CAM
            target layer (the CAM family; resolves :meth:`target_layer`); None: no gradient
            check (occlusion, partition SHAP).

        Returns
        -------
        list of str
            One message per problem, each saying how to fix it; empty when none was found.
            Also sets :attr:`n_outputs` (and so the default class names) on success.
        """
        try:
            x = self.prepare(images)
        except ValueError as exc:
            return [str(exc)]
        bad = nonfinite_rows(x, 0)
        if bad:
            return [_nonfinite_images_message(bad)]
        names = dict((m, n) for n, m in self.model.named_modules())
        layers = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
        seen: list[str] = []

        def first_layer_check(module: nn.Module, args: tuple) -> None:
            if seen or not args or not isinstance(args[0], torch.Tensor):
                return
            seen.append(names.get(module, type(module).__name__))
            got_shape = tuple(args[0].shape)
            is_conv = not isinstance(module, nn.Linear)
            expected = module.in_channels if is_conv else module.in_features
            got = got_shape[1] if is_conv and len(got_shape) > 1 else got_shape[-1]
            if not expected or got == expected:  # lazy layers (0) take anything
                return
            via = " after preprocess" if self.preprocess is not None else ""
            what = "input channels" if is_conv else "input features"
            if is_conv:
                fix = (
                    "Convert the images to what the model was trained on (grey to RGB: "
                    "preprocess=lambda x: x.repeat(1, 3, 1, 1); RGB to grey: preprocess="
                    "lambda x: x.mean(1, keepdim=True)), or audit a model for these images."
                )
            else:
                fix = (
                    "Resize the images to the size the model was trained on (preprocess= can "
                    "do it), or audit a model for these images."
                )
            raise _FirstLayerMismatch(
                f"The model's first layer {seen[0]!r} ({type(module).__name__}) expects "
                f"{expected} {what} but gets {got}{via} (images of shape "
                f"{tuple(x.shape[1:])}). {fix}"
            )

        handles = [
            m.register_forward_pre_hook(first_layer_check)
            for m in self.model.modules()
            if isinstance(m, layers)
        ]
        xg = x.detach().clone().requires_grad_(True)
        try:
            with eval_mode(self.model), torch.enable_grad():
                logits = self.forward(xg)
        except (_FirstLayerMismatch, ModelOutputError) as exc:
            return [str(exc)]
        except Exception as exc:  # the model's own error, with what it was given
            return [
                f"The model failed on a probe batch of shape {tuple(x.shape)}: "
                f"{type(exc).__name__}: {str(exc).rstrip('.')}. Check that the images' layout "
                "(N x C x H x W or N x C x D x H x W), size and channels are what the model expects "
                "(preprocess= can adapt them)."
            ]
        finally:
            for h in handles:
                h.remove()
        bad = nonfinite_rows(logits.detach(), 0)
        if bad:
            return [_nonfinite_outputs_message(bad)]
        if gradients == "input" and not _reaches_input(logits, xg):
            return [
                "The model's output does not depend differentiably on its input (its forward "
                "runs under torch.no_grad(), detaches, or goes through numpy), so gradient "
                "explanations cannot be computed. Remove the no_grad/detach from forward(), or "
                "use gradient-free methods only (occlusion, partition_shap)."
            ]
        if gradients == "layer":
            return self._check_layer_gradient(x)
        return []

    def _check_layer_gradient(self, x: torch.Tensor) -> list[str]:
        """CAM methods differentiate the output down to the target layer: does a gradient flow?"""
        try:
            name, layer = self.target_layer(x)
        except Exception as exc:  # TargetLayerError says how to choose one
            return [str(exc)]
        from ..explain.hooks import LayerCapture  # the capture the CAM explainers use

        try:
            with LayerCapture([(name, layer)]) as capture:
                with eval_mode(self.model), torch.enable_grad():
                    logits = self.forward(x)
        except TargetLayerError as exc:  # a tuple output, a shared layer: says what to do
            return [str(exc)]
        captured = [t for t in capture.outputs if t is not None]
        reached = bool(captured) and _reaches_input(logits, captured[0])
        if reached:
            return []
        return [
            f"No gradient flows from the model's output back to the CAM target layer {name!r} "
            "(it runs under torch.no_grad() or is detached), so CAM explanations cannot be "
            "computed. Remove the no_grad/detach from forward(), choose a layer after it with "
            "ModelAdapter(..., target_layer=...), or use gradient-free methods (occlusion, "
            "partition_shap)."
        ]

    # ------------------------------------------------------------------ layers
    def target_layer(self, example: torch.Tensor | None = None) -> tuple[str, nn.Module]:
        """The CAM target layer ``(name, module)``, found automatically on first use.

        Parameters
        ----------
        example : torch.Tensor, optional
            An input batch; needed the first time when no layer was given.
        """
        if self._target_layer is None:
            if example is None:
                raise TargetLayerError(
                    "No target layer is set; pass target_layer= to ModelAdapter, or give an "
                    "example batch so that it can be found automatically."
                )
            x = self.prepare(example[:1])
            with eval_mode(self.model):
                # Names are relative to the user's model, not the preprocessing wrapper.
                choice = choose_target_layer(self.module, x, name_prefix="model.")
            name = choice.name
            self._target_layer = (name, choice.module)
            self._auto_reshapes[(name, tuple(x.shape[2:]))] = choice.reshape_transform
        return self._target_layer

    def layer_reshape_transform(
        self, layers: list[tuple[str, nn.Module]], example: torch.Tensor
    ) -> ReshapeTransform | None:
        """The reshape CAM methods apply to these layers' outputs.

        The ``reshape_transform`` given to the adapter when there is one; otherwise inferred
        from one probe pass per layer and input size (cached): None for channels-first feature
        maps, a token-to-grid transform for ``N x T x D`` tokens, a channel move for
        channels-last (Swin) maps. With several layers the first one's layout decides.
        """
        if self.reshape_transform is not None:
            return self.reshape_transform
        name, module = layers[0]
        key = (name, tuple(int(s) for s in example.shape[2:]))
        if key not in self._auto_reshapes:
            x = self.prepare(example[:1])
            with eval_mode(self.model):
                transform, _shape, _note = layer_reshape(self.module, module, x)
            self._auto_reshapes[key] = transform
        return self._auto_reshapes[key]

    @property
    def target_layer_name(self) -> str | None:
        """Name of the CAM target layer, or None if not resolved yet."""
        return None if self._target_layer is None else self._target_layer[0]

    def set_target_layer(self, layer: str | nn.Module) -> None:
        """Choose the CAM target layer by name or module."""
        self._target_layer = resolve_layer(self.model, layer)

    def embed(self, images: Any, *, batch_size: int | None = None) -> np.ndarray:
        """Penultimate features ``N x F``: the input of the model's last linear layer.

        Used to find similar cases. Falls back to the spatially averaged CAM target layer
        when the model has no ``nn.Linear``.
        """
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        captured: list[torch.Tensor] = []
        if linears:

            def hook(_m, inputs, _out):
                captured.append(inputs[0].detach().flatten(1).float().cpu())

            module = linears[-1]
        else:

            def hook(_m, _inputs, out):
                out = self.reshape_transform(out) if self.reshape_transform else out
                captured.append(out.detach().flatten(2).mean(dim=2).float().cpu())

            module = None
        batch_size = batch_size or self.batch_size
        with eval_mode(self.model), torch.inference_mode():
            for raw in iter_image_batches(images, batch_size):
                x = self.prepare(raw)
                if module is None:
                    module = self.target_layer(x)[1]
                handle = module.register_forward_hook(hook)
                try:
                    self.forward(x)
                finally:
                    handle.remove()
        return torch.cat(captured).numpy()

    # ------------------------------------------------------------------ provenance
    def model_hash(self) -> str:
        """SHA-256 of the model's state dict (names, shapes, dtypes and values)."""
        digest = hashlib.sha256()
        for key, tensor in sorted(self.model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(key.encode())
            digest.update(str((tuple(t.shape), str(t.dtype))).encode())
            digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable summary for reports: name, architecture, sizes, hash."""
        n_params = sum(p.numel() for p in self.model.parameters())
        return {
            "name": self.name,
            "version": self.version,
            "architecture": type(self.model).__name__,
            "n_parameters": int(n_params),
            "n_outputs": self._n_outputs,
            "class_names": self.class_names if self._n_outputs or self._class_names else None,
            "multi_label": self.multi_label,
            "activation": self.activation,
            "target_layer": self.target_layer_name,
            "device": str(self.device),
            "sha256": self.model_hash(),
        }

    def __repr__(self) -> str:
        return (
            f"ModelAdapter({self.name}, outputs={self._n_outputs}, activation={self.activation!r}, "
            f"multi_label={self.multi_label}, device={str(self.device)!r}, "
            f"target_layer={self.target_layer_name!r})"
        )


__all__ = ["ModelAdapter", "ModelOutputError", "NonFiniteError", "TargetLayerError"]
