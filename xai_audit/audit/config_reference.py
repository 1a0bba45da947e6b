"""The configuration reference: every key an audit config accepts, with type, default, meaning.

The keys, types and defaults come from the config's own schema (the dataclasses of
:mod:`xai_audit.audit.config`, nested sections as ``section.key``); the meanings are written
here. ``python -m xai_audit.audit.config_reference`` prints the Markdown table that README.md
holds under "Configuration reference"; a test checks that every key the config accepts is in
that table, so a new key cannot go undocumented.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import Any

#: Meaning of each key (``section.key`` for nested ones). A key missing here is printed with
#: an "undocumented" marker, and the README test names it.
MEANINGS: dict[str, str] = {
    "name": "Title of the audit (report heading).",
    "output_dir": "Result folder (shards, saved result); a rerun with the same settings "
    "resumes there. Relative paths are relative to the config file.",
    "report_path": "HTML report path (default `output_dir/report.html`); the JSON twin is "
    "written next to it.",
    "model": "How to load the model (section, keys below).",
    "model.loader": '`"demo"` (the bundled demo CNN), `"package.module:function"`, '
    '`"file.py:function"` (returning a `ModelAdapter` or an `nn.Module`) or a TorchScript '
    "file (`.pt`, `.pth`, `.ts`).",
    "model.weights": "Weights file passed to the demo loader, or to a loader function as "
    "`weights=`.",
    "model.params": "Keyword arguments for a loader function.",
    "model.class_names": "Class names, in output order (bare `nn.Module` only).",
    "model.positive_class": "Class audited as positive (name or index); overrides an "
    "adapter's own.",
    "model.activation": '`"softmax"`, `"sigmoid"` or `"none"`: how outputs become '
    "probabilities (default: inferred).",
    "model.batch_size": "Images per forward pass of the model (default: the adapter's).",
    "model.device": '`"cpu"`, `"cuda"`, `"cuda:1"`, ... (default: the adapter\'s / CPU).',
    "model.target_layer": "Layer explained by CAM methods, as a module path "
    "(default: found automatically).",
    "data": "Where the data are and which manifest columns play which role (section).",
    "data.manifest": "Manifest CSV, one row per image (required).",
    "data.image_root": "Folder that relative image paths in the manifest start from "
    "(default: the manifest's folder).",
    "data.id_col": "Column with a unique case id per row.",
    "data.image_col": "Column with the image path (PNG, NPY, NIfTI, DICOM, ...).",
    "data.label_col": "Column with the ground truth (0/1 or class names).",
    "data.label_cols": "Several label columns, e.g. `[lesion, effusion, nodule]`: a "
    "multi-label audit, every label audited (see 'Multi-label models'); overrides "
    "`data.label_col`.",
    "explain_labels": "Multi-label audits: the labels explained (maps and explanation "
    "checks): `auto` (all when at most 5 labels, else the first and the flagged ones, at "
    "most 5), `all`, or a list of label columns. Every label gets its threshold, subgroup "
    "tables and findings either way.",
    "data.patient_col": "Column with the patient id: the bootstrap resamples patients, not "
    "images (never shown in the report). Optional when left at its default.",
    "data.mask_col": "Column with lesion mask paths, for the localisation checks. Optional "
    "when left at its default.",
    "data.image_size": "Bring images of mixed sizes to one size when they are loaded, "
    "`[H, W]` or `[D, H, W]` (masks too); default: images must share one size.",
    "data.resize": "How images reach `image_size`: `resize` (stretch), `pad` (fit, keep the "
    "aspect ratio, zero-pad) or `crop` (cover, centre-crop).",
    "data.ids_from": "Build case ids from the image paths: `filename` (name without "
    "extension) or `path` (path without extension) instead of `id_col`.",
    "attributes": "Sensitive attributes to audit (manifest columns), e.g. "
    "`[sex, age_group, site]`; `sensitive` is accepted as an alias.",
    "intersections": "`true`: every pair of attributes; `3`: pairs and triples; a list of "
    "attribute lists: those cells; `false`: none.",
    "attribute_bins": "Bins for numeric attributes, e.g. `{age: [0, 40, 65, 120]}` "
    "(left-closed: `0-39`, `40-64`, `65-119`), `auto` or `false` (raw values) per column. "
    "Default: a numeric attribute with more than 10 values is binned (age-like columns in "
    "decades, others in quintiles), noted in the data summary and findings.",
    "methods": "Attribution methods with their parameters, e.g. `{gradcam: {}, "
    "integrated_gradients: {n_steps: 16, max_images: 128}}` (`max_images`: explain a "
    "stratified sample only).",
    "threshold": "Operating threshold: a number in [0, 1], `youden`, `max_f1`, "
    "`{sensitivity: 0.9}` or `{specificity: 0.9}` (rules are applied on the whole data set).",
    "threshold_from": "Choose the threshold on a validation split of the manifest, e.g. "
    "`{split_column: split, split: validation, rule: youden}`; those rows are left out of "
    "the audit. Without it a rule is chosen on the audited data (reported as optimistic).",
    "threshold_note": "Where a numeric `threshold` comes from (e.g. `model card: Youden on "
    "the validation set`), shown in the report.",
    "performance_floor": "Lowest acceptable overall value per metric, e.g. `{auroc: 0.8, "
    "sensitivity: 0.85}`; a high finding when the lower end of the CI is below it (the "
    "AUROC is always judged against chance, 0.5).",
    "criteria": "Acceptance criteria file (YAML/TOML, see 'Change control') checked after "
    "the run: verdicts in the result and the report (`xai-audit check` is the CI gate).",
    "tolerance": "Largest acceptable gap between a subgroup and overall (absolute "
    "difference) before a flag; one number or `{metric: number}`.",
    "min_group_size": "Subgroups with fewer cases get no metrics (reported as too small).",
    "n_boot": "Bootstrap resamples for confidence intervals.",
    "ci": "Confidence level of the intervals, in [0.5, 1).",
    "seed": "Seed of every random choice (bootstrap, samples, exemplars).",
    "batch_size": "Images per batch and per stored shard.",
    "quality": "Explanation-trust checks (section, keys below).",
    "quality.faithfulness": "Run the deletion/insertion test (does removing the highlighted "
    "area lower the score faster than removing random areas?).",
    "quality.sanity": "Run the model-randomisation sanity check.",
    "quality.localisation": "Compare maps with lesion masks (needs `data.mask_col`).",
    "quality.shortcuts": "Search for shortcut regions (evidence where no lesion is).",
    "quality.sample_size": "Images in the faithfulness sample (seeded, balanced over TP/FP/FN/TN).",
    "quality.sanity_sample_size": "Images in the sanity-check sample.",
    "quality.n_steps": "Deletion/insertion steps.",
    "quality.faithfulness_reference": "What deleted pixels become: `road` (imputed from "
    "neighbours), `blur`, `mean` or `zeros`.",
    "quality.shortcut_region": "`auto` (search the whole image patch by patch) or one "
    "region to test: `corners`, `border`, `border_corners`, a border width in (0, 0.5), a box "
    "`[x0, y0, x1, y1]` in pixels, or a `.npy` mask file.",
    "quality.shortcut_border": "Width of the `border` regions, fraction of the side.",
    "quality.shortcut_corner": "Side of each `corners` square, fraction of the side.",
    "quality.shortcut_grid": "Patches per side for `auto`.",
    "quality.shortcut_sample_size": "Images per erase/paste sample of the causal "
    "confirmation, and test pairs per subgroup of the paste scan (seeded).",
    "quality.shortcut_min_score_change": "Smallest mean score change of an edit that "
    "confirms a shortcut.",
    "quality.shortcut_intersections": "Also search pairwise intersections of the "
    "attributes for shortcuts.",
    "quality.shortcut_scan": "With `auto`, also paste every window of each subgroup's "
    "positive predictions onto other groups' negatives (finds tokens the maps do not show; "
    "about 2 x (49 x 8 + `shortcut_sample_size`) model calls per subgroup).",
    "exemplars_per_cell": "Gallery cases per (subgroup, outcome) cell in the report.",
    "model_card": "Model-card fields shown in the report: `name`, `version`, "
    "`intended_use`, `intended_users`, `out_of_scope_use`, `training_data`, `limitations`.",
    "documentation": "Regulatory documentation fields and `document_control`, shown in the "
    'report\'s documentation checklist; a field not given reads "not provided".',
    "progress": "What a run shows: `auto` (bars in a terminal or notebook; on the command "
    "line a plain line every 30 s when the output is not a terminal), `bar`, `log`, or "
    "`false`/`off` (silent; also `xai-audit run --quiet`). Not part of the audit's settings.",
    "backend": "Where the batches run: `local` (this process) or `ray` (Ray actors, one per "
    'GPU of the cluster, else one per CPU; `pip install "xai-audit[ray]"`; see \'Scaling '
    "out on Ray'). Same shards and results either way, so a run resumes on the other backend; "
    "not part of the audit's settings. Also `xai-audit run --backend ray`.",
    "ray_address": "Ray cluster to join: `auto` (on a cluster node), `ray://head:10001` (Ray "
    "client); default: the `RAY_ADDRESS` environment variable, else a local Ray started for "
    "the run. Also `--ray-address`.",
    "ray_workers": "Number of Ray actors (default: one per GPU of the cluster, else one per "
    "CPU). Also `--ray-workers`.",
}

#: Fields of the config dataclasses that are not keys of the file.
INTERNAL = {"source"}


def _type_name(tp: Any) -> str:
    text = tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))
    return text.replace("typing.", "").replace("Any", "any")


def _default(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _show_default(value: Any) -> str:
    if dataclasses.is_dataclass(value):
        return "(section)"
    if value is None:
        return "null"
    if value is True or value is False:
        return str(value).lower()
    if value == "":
        return "(required)"
    return f"`{value!r}`".replace("'", '"') if not isinstance(value, (int, float)) else str(value)


def config_keys() -> list[tuple[str, str, str]]:
    """Every key of the config: ``(key, type, default)``, nested ones as ``section.key``.

    Read from the config dataclasses (:class:`~xai_audit.audit.config.AuditConfig` and the
    sections it holds), so that a key added there appears here without further work.
    """
    from .config import AuditConfig

    out: list[tuple[str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        for f in dataclasses.fields(cls):
            if f.name in INTERNAL:
                continue
            default = _default(f)
            key = f"{prefix}{f.name}"
            out.append((key, _type_name(f.type), _show_default(default)))
            if dataclasses.is_dataclass(default):
                walk(type(default), f"{key}.")

    walk(AuditConfig, "")
    return out


PLACEHOLDER = "**undocumented: add its meaning to README.md or config_reference.py**"


def readme_meanings(readme_text: str) -> dict[str, str]:
    """Meanings already written in a README table (kept when the table is regenerated)."""
    rows = re.findall(r"^\| `([^`]+)` \|.*?\| ([^|]*(?:\\\|[^|]*)*) \|$", readme_text, re.M)
    return {k: m.strip() for k, m in rows if m.strip() and "undocumented" not in m}


def markdown_table(readme_text: str | None = None) -> str:
    """The Markdown table of every key (the README's "Configuration reference").

    Meanings come from :data:`MEANINGS`, else from the row of ``readme_text`` (the current
    README) for that key, else a visible placeholder.
    """
    known = {**readme_meanings(readme_text or ""), **MEANINGS}
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, tp, default in config_keys():
        meaning = known.get(key, PLACEHOLDER)
        tp, default = tp.replace("|", "\\|"), default.replace("|", "\\|")
        lines.append(f"| `{key}` | {tp} | {default} | {meaning} |")
    return "\n".join(lines)


def undocumented(readme_text: str) -> list[str]:
    """Keys of the config that have no row in ``readme_text``'s table."""
    return [key for key, _, _ in config_keys() if f"| `{key}` |" not in readme_text]


if __name__ == "__main__":  # pragma: no cover - prints the README table
    from pathlib import Path

    readme = Path(__file__).resolve().parents[2] / "README.md"
    sys.stdout.write(markdown_table(readme.read_text() if readme.is_file() else None) + "\n")
