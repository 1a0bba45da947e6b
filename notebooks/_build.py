"""Generate the four user notebooks from the cell lists below (outputs cleared).

Run ``python notebooks/_build.py`` after editing; commit the ``.ipynb`` files. Every notebook
runs top to bottom on the bundled demo data and model in under two minutes on a CPU, writing
only below its own folder (``demo_data/``, ``audits/``, ``reports/``; see ``.gitignore``).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
KERNEL = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}

# Small enough for two minutes on a CPU; the audit resumes from its shards when rerun, so
# notebooks 02-04 reuse the work of the first one that ran.
SETUP = """\
%matplotlib inline
import warnings
from pathlib import Path

import pandas as pd

from xai_audit import load_demo_model
from xai_audit.audit import Audit
from xai_audit.data import load_manifest
from xai_audit.datasets import generate_demo_dataset

warnings.filterwarnings("ignore", message=".*minimum.*")  # small intersections are expected here
pd.set_option("display.width", 140)

N_IMAGES = 300  # the demo set has 1200; 300 keeps this notebook under two minutes on a CPU
manifest = load_manifest(generate_demo_dataset("demo_data", n_samples=N_IMAGES))
model = load_demo_model(device="cpu")
manifest"""

AUDIT = """\
audit = Audit(
    model,
    manifest,
    sensitive=["sex", "age_group", "site"],
    methods=["gradcam", "saliency"],
    n_boot=200,
    min_group_size=20,
    quality={"sample_size": 32, "sanity_sample_size": 8, "n_steps": 10},
    output_dir="audits/demo",
)
result = audit.run()
result"""

QUICKSTART = [
    new_markdown_cell(
        "# 01 · Quickstart: wrap a model, explain, audit, report\n\n"
        "This notebook runs the whole toolkit once on the bundled **synthetic** chest-radiograph "
        "data, in which a subgroup disparity (fainter lesions in the `65+` age group) and a "
        "shortcut (a corner marker at site `C`) were injected on purpose. A correct audit finds both.\n\n"
        "Everything runs on a CPU in under two minutes."
    ),
    new_markdown_cell("## 1. Data and model"),
    new_code_cell(SETUP),
    new_markdown_cell(
        "Any PyTorch classifier is wrapped the same way: the network, its class names, the output "
        "activation, and optionally preprocessing and the layer that CAM methods explain (found "
        "automatically otherwise). `load_demo_model()` does exactly this for the demo CNN:"
    ),
    new_code_cell(
        "from xai_audit import ModelAdapter\n"
        "from xai_audit.model import load_demo_network\n\n"
        'wrapped = ModelAdapter(load_demo_network(), class_names=["normal", "lesion"],\n'
        '                       activation="softmax", positive_class="lesion", device="cpu")\n'
        "images = manifest.load_images(range(8))\n"
        "wrapped.predict_proba(images).round(3)"
    ),
    new_markdown_cell("## 2. Explain a few predictions"),
    new_code_cell(
        "from xai_audit.explain import compare_methods, explain\n\n"
        'attribution = explain(model, images, method="gradcam", target="lesion")\n'
        "print(attribution.maps.shape, attribution.method)\n"
        'maps = {m: explain(model, images[:1], method=m, target="lesion") for m in ["gradcam", "saliency"]}\n'
        'compare_methods(images[0], maps, title="Where the model looks for a lesion")'
    ),
    new_markdown_cell(
        "### Explore interactively\n\n"
        "The explorer works directly on a model and images (maps are computed when a case is "
        "first shown, then cached). Filter by subgroup and outcome, tick several methods, change "
        "the target class, colormap and opacity."
    ),
    new_code_cell(
        "from xai_audit.widgets import ExplanationExplorer\n\n"
        'explorer = ExplanationExplorer(model, manifest, methods=["gradcam", "saliency"])\n'
        "explorer"
    ),
    new_markdown_cell(
        "## 3. Audit\n\n"
        "Predictions and attributions for every image, subgroup metrics with bootstrap confidence "
        "intervals, and explanation-trust checks (faithfulness, localisation, sanity, shortcuts)."
    ),
    new_code_cell(AUDIT),
    new_code_cell(
        "for finding in result.findings:\n"
        "    print(f\"[{finding['severity']}] {finding['title']}\")"
    ),
    new_code_cell(
        "by_group = result.subgroups.by_group\n"
        'by_group[(by_group.metric == "sensitivity") & ~by_group.attribute.str.contains("×")]'
    ),
    new_markdown_cell(
        "## 4. Report\n\nA self-contained HTML file (and its JSON twin) for sharing."
    ),
    new_code_cell(
        'report = result.report("reports/quickstart.html")\n'
        'print(report, report.stat().st_size // 1024, "kB")'
    ),
    new_markdown_cell("The explorer also opens on the audit result, reusing its stored maps:"),
    new_code_cell(
        "from xai_audit.widgets import explorer as open_explorer\n\n"
        'open_explorer(result, manifest, model=model, show=["gradcam", "saliency"])'
    ),
]

BIAS = [
    new_markdown_cell(
        "# 02 · Bias audit (for data scientists)\n\n"
        "Does the model work equally well for everyone? Subgroups, intersections, the operating "
        "threshold, and the cases behind a gap. The synthetic data has one injected disparity: "
        "lesions are fainter in the `65+` age group."
    ),
    new_code_cell(SETUP),
    new_code_cell(AUDIT),
    new_markdown_cell(
        "## Disparities and flags\n\nGaps beyond the tolerance (0.05 by default) are flagged."
    ),
    new_code_cell(
        "for flag in result.subgroups.flags:\n"
        '    print(flag.get("message", flag) if isinstance(flag, dict) else flag)'
    ),
    new_code_cell(
        "by_group = result.subgroups.by_group\n"
        'sens = by_group[by_group.metric == "sensitivity"]\n'
        'sens[["attribute", "group", "n", "value", "ci_low", "ci_high", "status"]]'
    ),
    new_markdown_cell(
        "## Subgroup dashboard\n\n"
        "Pick attributes (several selected: their intersection is added), a metric, and move the "
        "threshold: point estimates follow live, confidence intervals are the audit's at its "
        "threshold and are recomputed on request (**Compute CIs**). Small groups are drawn hollow "
        "and listed as warnings. Choose a group and **Open cases** to see its explanations."
    ),
    new_code_cell(
        "from xai_audit.widgets import SubgroupDashboard\n\n"
        "dashboard = SubgroupDashboard.from_result(result, model=model, data=manifest,\n"
        '                                          attributes=["age_group", "sex"], min_group_size=20)\n'
        "dashboard"
    ),
    new_markdown_cell(
        "The same logic is available without widgets, e.g. to see how the sensitivity gap moves "
        "with the threshold:"
    ),
    new_code_cell(
        "state = dashboard.state\n"
        "rows = []\n"
        "for t in [0.3, 0.4, result.threshold, 0.6]:\n"
        "    state.set_threshold(t)\n"
        '    table = state.table("sensitivity")\n'
        '    ages = table[table.attribute == "age_group"].set_index("group")["value"]\n'
        '    rows.append({"threshold": round(t, 3), **ages.round(3).to_dict()})\n'
        "state.set_threshold(result.threshold)\n"
        "pd.DataFrame(rows)"
    ),
    new_markdown_cell(
        "## Intersections\n\nSensitivity by sex × age group (groups under 20 cases are flagged)."
    ),
    new_code_cell(
        'state.set_attributes(["sex", "age_group"])\n'
        'table = state.table("sensitivity")\n'
        'table[table.attribute == "sex × age_group"]'
    ),
    new_markdown_cell(
        "## The cases behind the gap\n\nMissed lesions (false negatives) in the `65+` group:"
    ),
    new_code_cell('dashboard.open_group("age_group", "65+", outcome="FN")'),
]

REGULATORY = [
    new_markdown_cell(
        "# 03 · Regulatory review: can the explanations be trusted?\n\n"
        "For a reviewer: the key findings, whether the attribution maps are faithful to the "
        "model, whether they pass the model-randomisation sanity check, whether the model relies "
        "on a shortcut, and the report to file."
    ),
    new_code_cell(SETUP),
    new_code_cell(AUDIT),
    new_markdown_cell("## Key findings"),
    new_code_cell('pd.DataFrame(result.findings)[["severity", "kind", "title", "message"]]'),
    new_markdown_cell(
        "## Explanation trust\n\n"
        "Per method: faithfulness (deleting the most relevant pixels first should lower the "
        "score faster than deleting random pixels), localisation against the lesion masks, the "
        "sanity check (maps must change when the model's weights are randomised), and shortcut "
        "evidence (attribution mass at the image border and corners)."
    ),
    new_code_cell(
        "def show(section):\n"
        "    for method, value in section.items():\n"
        '        print(f"--- {method}")\n'
        "        for key, item in value.items():\n"
        "            if isinstance(item, pd.DataFrame):\n"
        "                display(item.head(8))\n"
        "            elif isinstance(item, (str, int, float, bool)):\n"
        '                print(f"{key}: {item}")\n\n'
        "show(result.quality.faithfulness)"
    ),
    new_code_cell("show(result.quality.sanity)"),
    new_code_cell("show(result.quality.shortcuts)"),
    new_markdown_cell(
        "## Shortcut evidence, case by case\n\n"
        "Site `C` images may carry a corner marker that co-occurs with lesions. Browse them: "
        "attribution at the top-left corner is the model looking at the marker, not the lungs."
    ),
    new_code_cell(
        "from xai_audit.widgets import ExplanationExplorer\n\n"
        "shortcut_view = ExplanationExplorer.from_result(result, model=model, data=manifest,\n"
        '                                                show=["gradcam", "saliency"])\n'
        'shortcut_view.show_group({"site": "C"}, outcome="TP")\n'
        "shortcut_view"
    ),
    new_markdown_cell(
        "## Export the report\n\nSelf-contained HTML (no network needed to view) and its JSON twin."
    ),
    new_code_cell(
        'report = result.report("reports/regulatory_review.html")\n'
        'twin = report.with_suffix(".json")\n'
        "print(report, twin.exists())\n"
        "{k: result.provenance[k] for k in list(result.provenance)[:6]}"
    ),
]

CASE_REVIEW = [
    new_markdown_cell(
        "# 04 · Case review (for clinicians)\n\n"
        "One case at a time: what the model says and how far its confidence can be trusted, "
        "where it looked (two explanation methods side by side, with the annotated lesion "
        "outlined), whether that explanation is trustworthy for this case, and the most similar "
        "cases in the data set with their true labels."
    ),
    new_code_cell(SETUP),
    new_code_cell(AUDIT),
    new_markdown_cell("Missed lesions are the cases a clinician most needs to understand:"),
    new_code_cell('pred = result.predictions\nmissed = pred[pred.outcome == "FN"]\nmissed.head()'),
    new_code_cell(
        "from xai_audit.widgets import CaseReview\n\n"
        "first = missed.case_id.iloc[0] if len(missed) else pred.case_id.iloc[0]\n"
        "review = CaseReview.from_result(result, model=model, data=manifest, case_id=first,\n"
        '                                show=["gradcam", "saliency"],\n'
        '                                cases=list(pred[pred.outcome.isin(["FN", "FP"])].case_id))\n'
        "review"
    ),
    new_markdown_cell("The same content as plain text, e.g. for a case note:"),
    new_code_cell(
        "state = review.state\n"
        "state.run_deletion()  # the per-case faithfulness test (the widget's button)\n"
        "print(state.confidence().caption)\n"
        'for line in state.captions() + list(state.quality()["caption"]):\n'
        '    print("-", line)\n'
        "state.similar()"
    ),
    new_markdown_cell("A false positive, for comparison:"),
    new_code_cell(
        'false_pos = pred[pred.outcome == "FP"].case_id\n'
        "if len(false_pos):\n"
        "    review.select_case(false_pos.iloc[0])\n"
        "review.state.summary()"
    ),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_bias_audit.ipynb": BIAS,
    "03_regulatory_review.ipynb": REGULATORY,
    "04_case_review.ipynb": CASE_REVIEW,
}


def build(out_dir: Path = HERE) -> list[Path]:
    """Write every notebook (outputs empty) into ``out_dir``; return the paths."""
    paths = []
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(
            cells=cells, metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}}
        )
        for i, cell in enumerate(nb.cells):
            cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"  # stable ids: clean diffs
        path = out_dir / name
        nbformat.write(nb, path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in build():
        print(p)
