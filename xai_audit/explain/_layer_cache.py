"""What ``explain(bare_module, x)`` found out about a module, kept for its next call.

``explain`` wraps a bare ``nn.Module`` in a fresh :class:`~xai_audit.model.ModelAdapter` on
every call, and a fresh adapter searches the CAM target layer again with a probing forward
pass (and infers a reshape for token layers), and learns the number of outputs with another
one: together about half of a small Grad-CAM call. The
facts are kept here, keyed weakly on the module (a module that is garbage-collected drops its
entry) and stamped with the module's structure (every submodule's name, type and identity),
so that replacing or adding a submodule makes the entry stale and the search runs again.
"""

from __future__ import annotations

import weakref
from typing import Any

from torch import nn

from ..model.state import submodules

_CACHE: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, Any]]] = (
    weakref.WeakKeyDictionary()
)


def structure(module: nn.Module) -> tuple:
    """The module tree's identity: for every submodule its type and identity, its children
    by attribute name and identity, and its parameters' shapes (a resized head changes the
    number of outputs).

    Built from one walk over the ``_modules`` dicts (:func:`~xai_audit.model.state.submodules`)
    rather than ``named_modules()``/``parameters()``, which rebuild every dotted name: it runs
    on every ``explain(bare_module, x)`` call (0.77 ms on a DenseNet-121 before, 0.2 ms now).
    """
    mods = submodules(module)
    return (
        tuple(map(id, mods)),
        tuple(map(type, mods)),
        tuple(tuple(m._modules) for m in mods),  # child names: the layer's name must hold
        tuple(p.shape for m in mods for p in m._parameters.values() if p is not None),
    )


def restore(module: nn.Module, adapter: Any) -> tuple | None:
    """Give a fresh adapter of ``module`` what an earlier call found (if still valid).

    Returns the module's structure stamp when the entry was valid (for :func:`remember`).
    """
    entry = _CACHE.get(module)
    if entry is None:
        return None
    stamp = structure(module)
    if entry[0] != stamp:
        return None
    facts = entry[1]
    if adapter._n_outputs is None and facts.get("n_outputs") is not None:
        adapter._n_outputs = facts["n_outputs"]  # spares explain()'s one-image forward pass
    if adapter._target_layer is None and facts.get("target_layer") is not None:
        adapter._target_layer = facts["target_layer"]
    reshapes = getattr(adapter, "_auto_reshapes", None)
    if isinstance(reshapes, dict):
        for key, value in facts.get("auto_reshapes", {}).items():
            reshapes.setdefault(key, value)
    return stamp


def remember(module: nn.Module, adapter: Any, stamp: tuple | None = None) -> None:
    """Keep what ``adapter`` found out about ``module`` (target layer, output width,
    inferred reshapes); ``stamp`` is :func:`restore`'s return value, when it had one."""
    target = adapter._target_layer
    reshapes = getattr(adapter, "_auto_reshapes", None)
    if target is None and not reshapes:
        return
    facts: dict[str, Any] = {"target_layer": target, "n_outputs": adapter._n_outputs}
    if isinstance(reshapes, dict):
        facts["auto_reshapes"] = dict(reshapes)
    entry = _CACHE.get(module)
    if stamp is not None and entry is not None and entry == (stamp, facts):
        return  # nothing new (a call never changes the module's structure)
    try:
        _CACHE[module] = (structure(module), facts)
    except TypeError:  # pragma: no cover - a module that cannot be weakly referenced
        pass


def clear() -> None:
    """Forget every module (tests)."""
    _CACHE.clear()
