"""Matplotlib figures for the quality results (imported lazily by the ``plot`` methods)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .faithfulness import FaithfulnessResult
    from .sanity import SanityResult
    from .shortcut import ShortcutResult


def plot_faithfulness(result: FaithfulnessResult, ax: Any = None) -> Any:
    """Mean curves (with the interquartile band) for the method and the random reference.

    Returns the figure.
    """
    import matplotlib.pyplot as plt

    keys = sorted(
        {(m, o) for m, o, _ in result.arrays}, key=lambda k: (k[0] != "deletion", k[1] != "morf")
    )
    if ax is None:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.2), squeeze=False)
        axes = axes[0]
    else:
        axes = np.atleast_1d(ax)
        fig = axes[0].figure
    f = result.fractions
    summary = result.summary.set_index(["mode", "order"])
    for a, (mode, order) in zip(axes, keys):
        for ref, colour in (("method", "C0"), ("random", "0.5")):
            arr = result.arrays[(mode, order, ref)]
            a.plot(f, arr.mean(axis=0), color=colour, label=ref)
            q1, q3 = np.quantile(arr, [0.25, 0.75], axis=0)
            a.fill_between(f, q1, q3, color=colour, alpha=0.15, linewidth=0)
        row = summary.loc[(mode, order)]
        a.set_title(
            f"{mode} ({ {'morf': 'MoRF', 'lerf': 'LeRF'}[order] })\nadvantage {row['advantage']:+.3f} "
            f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
            fontsize=9,
        )
        a.set_xlabel("fraction of pixels")
        a.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("target-class probability")
    axes[0].legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_sanity(result: SanityResult, image: int = 0, max_steps: int | None = None) -> Any:
    """One row per method: original map, then the map after each randomisation step."""
    import matplotlib.pyplot as plt

    names = list(result.maps)
    labels = ["original"] + list(result.steps[result.steps["method"] == names[0]]["layer"])[1:]
    n_cols = len(labels) if max_steps is None else min(len(labels), max_steps + 1)
    fig, axes = plt.subplots(
        len(names), n_cols, figsize=(1.3 * n_cols, 1.5 * len(names) + 0.4), squeeze=False
    )
    for r, name in enumerate(names):
        stack = result.maps[name]
        if image >= stack.shape[1]:
            raise IndexError(f"Only {stack.shape[1]} images' maps were kept (keep_maps).")
        for c in range(n_cols):
            m = np.abs(stack[c, image])
            m = m[m.shape[0] // 2] if m.ndim == 3 else m  # middle slice of a volume
            axes[r, c].imshow(m, cmap="magma", vmin=0, vmax=m.max() or 1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(labels[c], fontsize=6, rotation=30)
        verdict = "pass" if result.passed[name] else "FAIL"
        axes[r, 0].set_ylabel(f"{name}\n({verdict})", fontsize=8)
    fig.suptitle("Cascading randomisation, output layer first", fontsize=9)
    fig.tight_layout()
    return fig


def plot_shortcuts(
    result: ShortcutResult, ax: Any = None, predicted: Any = None, reference: float | None = None
) -> Any:
    """Mean share in the region per subgroup (one colour per predicted class), with CIs.

    Flagged groups are drawn in bold; ``reference`` (e.g. the region's area share) is a
    dashed line.
    """
    import matplotlib.pyplot as plt

    table = result.table
    if predicted is not None:
        table = table[table["predicted"] == predicted]
    labels = [f"{a}={g}" for a, g in zip(table["attribute"], table["group"])]
    unique_labels = list(dict.fromkeys(labels))
    classes = list(dict.fromkeys(table["predicted_label"]))
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(unique_labels) + 1.2))
    else:
        fig = ax.figure
    height = 0.8 / max(1, len(classes))
    for j, cls in enumerate(classes):
        sub = table[table["predicted_label"] == cls]
        ypos = [
            unique_labels.index(f"{a}={g}") + j * height
            for a, g in zip(sub["attribute"], sub["group"])
        ]
        err = np.vstack([sub["mean_share"] - sub["ci_low"], sub["ci_high"] - sub["mean_share"]])
        ax.barh(
            ypos,
            sub["mean_share"],
            height=height,
            xerr=np.nan_to_num(err),
            label=f"predicted {cls}",
            color=f"C{j}",
            alpha=0.8,
            error_kw={"elinewidth": 0.8},
        )
    ax.set_yticks(np.arange(len(unique_labels)) + 0.4 - height / 2)
    ax.set_yticklabels(unique_labels, fontsize=7)
    flagged = {f"{a}={g}" for a, g in zip(result.flagged["attribute"], result.flagged["group"])}
    for tick in ax.get_yticklabels():
        if tick.get_text() in flagged:
            tick.set_fontweight("bold")
            tick.set_color("C3")
    if reference is not None:
        ax.axvline(reference, color="0.4", linestyle="--", linewidth=0.8, label="area share")
    ax.invert_yaxis()
    ax.set_xlabel(f"share of attribution in {result.params.get('region', 'region')}")
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return fig
