"""Generate the user notebooks from the cell lists below (outputs cleared).

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

CHANGE_CONTROL = [
    new_markdown_cell(
        "# 05 · Change control: is v2 acceptable?\n\n"
        "Every model update raises the same question: *did v2 fix what it was meant to fix "
        "(here: the lower sensitivity in the `65+` age group) without harming anyone?* A "
        "Predetermined Change Control Plan answers it with **acceptance criteria written before "
        "the new audit**, and a **paired comparison** of the two models on the same cases: every "
        "bootstrap resample draws patients once and scores both models on them, so the "
        "intervals are for the difference itself.\n\n"
        "Steps: write the criteria, audit the reference model, make a v2 (a few fine-tuning "
        "steps on separate data), audit it on the same cases, compare, judge the criteria."
    ),
    new_code_cell(SETUP),
    new_markdown_cell(
        "## 1. Acceptance criteria, written first\n\n"
        "Bounds are on confidence intervals, never on point estimates. `compare_to: reference` "
        "criteria read the paired difference new − reference: non-inferiority by 0.02 means the "
        "lower end of its interval must be at or above −0.02."
    ),
    new_code_cell(
        "criteria_file = Path(\"audits/v2_criteria.yaml\")\n"
        "criteria_file.parent.mkdir(exist_ok=True)\n"
        "criteria_file.write_text('''\\\n"
        "criteria:\n"
        "  - metric: sensitivity              # the goal of v2: the 65+ group\n"
        "    groups: age_group=65+\n"
        "    lower_ci_at_least: 0.80\n"
        "  - compare_to: reference            # nobody worse off: sensitivity and specificity\n"
        "    metric: sensitivity\n"
        "    groups: age_group\n"
        "    non_inferiority_margin: 0.02\n"
        "  - compare_to: reference\n"
        "    metric: specificity\n"
        "    groups: age_group\n"
        "    non_inferiority_margin: 0.02\n"
        "  - compare_to: reference\n"
        "    metric: auroc\n"
        "    groups: overall\n"
        "    non_inferiority_margin: 0.01\n"
        "''')\n"
        "from xai_audit.audit.criteria import load_criteria\n\n"
        "criteria = load_criteria(criteria_file)\n"
        "len(criteria)"
    ),
    new_markdown_cell("## 2. The reference audit (v1)"),
    new_code_cell(AUDIT),
    new_markdown_cell(
        "## 3. Make a v2\n\n"
        "A stand-in for a real retraining: the last layer of the demo CNN is fine-tuned for a "
        "few steps on **separate** synthetic data (another seed; never on the audited cases), "
        "with the `65+` group weighted three times."
    ),
    new_code_cell(
        "import torch\n\n"
        "from xai_audit import ModelAdapter\n"
        "from xai_audit.model import load_demo_network\n\n"
        "tune = load_manifest(generate_demo_dataset(\"audits/tune_data\", n_samples=160, seed=7))\n"
        "net = load_demo_network()  # eval mode: batch-norm statistics stay fixed\n"
        "x = torch.tensor(tune.load_images(range(len(tune))), dtype=torch.float32)\n"
        "y = torch.tensor(tune.label, dtype=torch.long)\n"
        "weight = torch.where(torch.tensor((tune.attributes[\"age_group\"] == \"65+\").to_numpy()), 3.0, 1.0)\n"
        "with torch.no_grad():  # the convolutional features stay as they are\n"
        "    feats = torch.flatten(net.pool(net.features((x - net.mean) / net.std)), 1)\n"
        "opt = torch.optim.Adam(net.head.parameters(), lr=0.02)\n"
        "for step in range(40):\n"
        "    loss = (torch.nn.functional.cross_entropy(net.head(feats), y, reduction=\"none\") * weight).mean()\n"
        "    opt.zero_grad()\n"
        "    loss.backward()\n"
        "    opt.step()\n"
        "model_v2 = ModelAdapter(net.eval(), class_names=[\"normal\", \"lesion\"], activation=\"softmax\",\n"
        "                        positive_class=\"lesion\", device=\"cpu\", name=\"xai_audit demo CNN\",\n"
        "                        version=\"2.0-finetuned\")\n"
        "print(f\"fine-tuning loss {loss.item():.3f}\")"
    ),
    new_markdown_cell(
        "Audit v2 exactly like v1: same cases, attributes, methods and settings (a comparison "
        "needs the same case ids)."
    ),
    new_code_cell(
        "result_v2 = Audit(\n"
        "    model_v2,\n"
        "    manifest,\n"
        "    sensitive=[\"sex\", \"age_group\", \"site\"],\n"
        "    methods=[\"gradcam\", \"saliency\"],\n"
        "    n_boot=200,\n"
        "    min_group_size=20,\n"
        "    quality={\"sample_size\": 32, \"sanity_sample_size\": 8, \"n_steps\": 10},\n"
        "    output_dir=\"audits/v2\",\n"
        ").run()\n"
        "result_v2"
    ),
    new_markdown_cell(
        "## 4. Compare\n\n"
        "Audit results keep no patient ids, so the manifest is passed to group a patient's "
        "images in the bootstrap (the ids are not stored). Each model is judged at its own "
        "audited threshold; the summary says which."
    ),
    new_code_cell(
        "from xai_audit.compare import compare_audits\n\n"
        "cmp = compare_audits(result, result_v2, patients=manifest, n_boot=200)\n"
        "print(cmp.summary())"
    ),
    new_markdown_cell(
        "How to read it: *better* / *worse* only when the whole interval lies on one side of "
        "zero; group changes are named only when a simultaneous interval over every group and "
        "metric excludes zero, so that among dozens of groups nothing is named by chance. "
        "Each model is judged at its **own** audited threshold: when v2's scores shift, a "
        "threshold re-chosen on the audited data (Youden here) moves with them and can undo the "
        "change in decisions. To compare decisions at one operating point fixed in advance, give "
        "both audits the same `threshold` (a number, e.g. the model card's) or a validation "
        "split (`threshold_from`).\n\n"
        "`cmp.differences` has one row per metric and group (intersections too): reference, "
        "new, the paired difference and its interval."
    ),
    new_code_cell(
        "d = cmp.differences\n"
        "d[(d.attribute == \"age_group\") & d.metric.isin([\"sensitivity\", \"specificity\"])].round(3)"
    ),
    new_markdown_cell(
        "Which decisions flipped, by group, and how many flips became errors:"
    ),
    new_code_cell("cmp.flips[cmp.flips.attribute.isin([\"overall\", \"age_group\"])]"),
    new_markdown_cell(
        "Did the explanations change? Shortcut share and localisation are paired per case; "
        "faithfulness and sanity are each audit's own verdict."
    ),
    new_code_cell("cmp.explanations.round(3)"),
    new_markdown_cell("## 5. Judge the criteria"),
    new_code_cell(
        "from xai_audit.audit.criteria import evaluate_criteria, exit_code, format_table\n\n"
        "verdicts = evaluate_criteria(result_v2, criteria, comparison=cmp)\n"
        "print(format_table(verdicts))\n"
        "print(\"exit code of `xai-audit compare ... --criteria`:\", exit_code(verdicts))"
    ),
    new_markdown_cell(
        "A `fail` row names the group and the bound it missed; *the estimate meets it, the "
        "interval does not* means the data are too few to show it. Where both models make the "
        "same decision on every case of a group, the paired interval is exactly 0: no case "
        "disagrees, which is no proof of equality in a larger population (check `n` and "
        "`cmp.flips` for small groups)."
    ),
    new_markdown_cell(
        "The same gate from a shell or CI job (exit 0: every criterion passes, 1: one fails, "
        "2: one is inconclusive or an error):\n\n"
        "```\n"
        "xai-audit compare audits/demo audits/v2 --manifest demo_data/manifest.csv \\\n"
        "    --criteria audits/v2_criteria.yaml --report reports/change_control.html\n"
        "```\n\n"
        "The comparison report (self-contained HTML and its JSON twin):"
    ),
    new_code_cell(
        "report = cmp.report(\"reports/change_control.html\", criteria=verdicts)\n"
        "print(report, report.stat().st_size // 1024, \"kB\")"
    ),
    new_markdown_cell(
        "## 6. Look at either model\n\n"
        "The dashboard and explorer open on the reference or the new audit; `model_picker` "
        "switches between them."
    ),
    new_code_cell("cmp.dashboard(\"new\", data=manifest, model=model_v2)"),
    new_code_cell(
        "from xai_audit.compare import model_picker\n\n"
        "model_picker(cmp, \"dashboard\", data=manifest)"
    ),
]

NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_bias_audit.ipynb": BIAS,
    "03_regulatory_review.ipynb": REGULATORY,
    "04_case_review.ipynb": CASE_REVIEW,
    "05_change_control.ipynb": CHANGE_CONTROL,
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
