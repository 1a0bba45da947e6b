"""The demo's regulatory documentation fields, stated from its data card and model card.

Only what the cards establish is filled in (training data, demographics, independence,
reference standard, acquisition); everything a manufacturer would have to state for a real
device (human oversight, risk management, monitoring, standards...) is left out, so that the
demo report shows those items as "not provided".
"""

from __future__ import annotations

from typing import Any


def _share(probs: dict[str, Any]) -> str:
    return ", ".join(f"{k} {100 * float(v):.0f}%" for k, v in probs.items())


def demo_documentation(card: dict[str, Any], model_card: dict[str, Any]) -> dict[str, Any]:
    """Documentation fields of the demo audit.

    Parameters
    ----------
    card : dict
        The audited data set's card (``datasets/demo/card.json``, :func:`build_card`).
    model_card : dict
        The demo model's training card (:func:`xai_audit.model.demo_model_card`).

    Returns
    -------
    dict
        A ``documentation`` mapping for :class:`~xai_audit.audit.Audit`.
    """
    tr = model_card.get("training") or {}
    seeds = tr.get("data_seeds") or {}
    attrs = card.get("attributes") or {}
    cfg = card.get("config") or {}
    acquisition = "; ".join(
        f"site {s}: contrast gain {a['contrast_gain']}, noise SD {a['noise_sd']}, blur "
        f"{a['blur_sigma_px']:.1f} px"
        for s, a in (card.get("acquisition") or {}).items()
    )
    effects = ", ".join(e["name"] for e in card.get("effects") or []) or "none"
    return {
        "manufacturer": "xai_audit developers (demonstration model; not a medical device).",
        "intended_use_environment": "Notebooks and tutorials of xai_audit; no clinical setting.",
        "training_data": (
            f"{tr.get('n_train')} training, {tr.get('n_val')} validation and "
            f"{tr.get('n_test')} test images from the synthetic generator "
            f"{card.get('generator')} {card.get('generator_version')} (prevalence "
            f"{cfg.get('prevalence')}), with the generator's default injected effects "
            "(fainter lesions at age 65+, a corner marker at site C); injected in the audited "
            f"data: {effects}."
        ),
        "training_data_demographics": {
            a: _share(v.get("configured") or {}) + " (generator probabilities)"
            for a, v in attrs.items()
        },
        "independence_statement": (
            f"Training, validation and test images were generated with seeds "
            f"{seeds.get('train')}, {seeds.get('val')}, {seeds.get('test')}; the audited data "
            f"with seed {card.get('seed')}: different synthetic patients, but the same "
            "generator, sites and injected effects (independent samples, not an external "
            "population)."
        ),
        "reference_standard": (
            "Generator ground truth: a lesion was drawn (label 1) or not (label 0); lesion "
            "masks are the drawn disks. No human reader."
        ),
        "acquisition": f"Synthetic sites with different acquisition: {acquisition}.",
        "data_preparation": (
            f"All generated images used; no exclusions. Images {card.get('image_size')} px, "
            f"intensities in {card.get('intensity_range')}."
        ),
        "document_control": {"document_id": "XAI-AUDIT-DEMO", "revision": "1"},
    }
