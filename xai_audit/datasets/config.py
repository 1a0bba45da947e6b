"""Every knob of the synthetic chest-radiograph generator, with the default effect sizes.

The defaults are the values recorded in ``datasets/README.md`` (the data card); change them
there too when they change here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

#: Bumped whenever the same arguments would produce different pixels or metadata.
GENERATOR_VERSION = "1.0.0"
GENERATOR_NAME = "xai_audit.synthetic_cxr"

#: Shapes of the marker token (see :func:`~xai_audit.datasets.render.marker_pattern`).
MARKER_SHAPES = ("L", "square", "ring", "text")
#: Marker knobs added after 1.0.0, with the defaults that reproduce 1.0.0 exactly.
_ADDED_MARKER_KNOBS: dict[str, Any] = {
    "marker_shape": "L",
    "marker_width": None,
    "marker_position": None,
}
#: Every knob added after 1.0.0: at these values the output is byte-identical to 1.0.0.
#: Hidden-factor (device) knobs, added for slice discovery; ``p_device=0`` draws nothing.
_ADDED_DEVICE_KNOBS: dict[str, Any] = {
    "p_device": 0.0,
    "device_lesion_factor": 0.25,
    "device_intensity": 0.85,
    "device_width": 3.0,
}
ADDED_KNOBS: dict[str, Any] = {
    "faint_where": None,
    **_ADDED_MARKER_KNOBS,
    **_ADDED_DEVICE_KNOBS,
}


@dataclass(frozen=True)
class SiteAcquisition:
    """Acquisition parameters of one site (scanner/protocol).

    Parameters
    ----------
    contrast_gain : float
        Intensities are stretched around ``SyntheticConfig.gain_pivot`` by this factor.
    noise_sd : float
        Standard deviation of additive Gaussian noise (intensity units, image in [0, 1]).
    blur_sigma : float
        Gaussian blur sigma in pixels at 128 px (scaled with the image size); 0 = sharp.
    """

    contrast_gain: float
    noise_sd: float
    blur_sigma: float


def _default_sites() -> dict[str, SiteAcquisition]:
    # Deliberately mild differences: site must not cause a performance gap on its own, or the
    # control set would show a disparity that nobody injected.
    return {
        "A": SiteAcquisition(contrast_gain=1.00, noise_sd=0.020, blur_sigma=0.0),
        "B": SiteAcquisition(contrast_gain=0.90, noise_sd=0.030, blur_sigma=0.8),
        "C": SiteAcquisition(contrast_gain=1.10, noise_sd=0.025, blur_sigma=0.5),
    }


@dataclass(frozen=True)
class SyntheticConfig:
    """Configuration of :func:`~xai_audit.datasets.make_synthetic_cxr`.

    Sizes in pixels are given for a 128 px image and scaled linearly with ``image_size``.

    Parameters
    ----------
    prevalence : float
        Probability that a patient has a lesion (all of a patient's images share it).
    sex_probs, age_group_probs, site_probs : dict
        Category -> probability; drawn per patient, independently of each other and of the label.
    images_per_patient_probs : dict
        Number of images of one patient -> probability.
    lesion_contrast_range : tuple of float
        Peak lesion intensity added (before site gain), drawn uniformly per patient.
    faint_age_group : str
        The age group whose lesions are fainter (the injected disparity).
    faint_factor : float
        Lesion contrast multiplier in ``faint_age_group`` (1 = no effect; forced to 1 in control).
    faint_where : dict of str to str, optional
        Attribute -> group conditions that must all hold for an image's lesion to be faint;
        overrides ``faint_age_group``. ``{"sex": "F"}`` puts the disparity in one group of
        another attribute, ``{"sex": "F", "age_group": "65+"}`` only in that intersection.
    lesion_radius_range : tuple of float
        Lesion radius in px at 128 px, drawn uniformly per patient.
    min_lesion_radius : float
        Lower bound on the radius in px after scaling (keeps lesions visible in small volumes).
    marker_site : str
        The site whose images may carry a corner marker (the injected shortcut).
    p_marker_positive, p_marker_negative : float
        P(marker | positive, marker_site) and P(marker | negative, marker_site).
    p_marker_other_sites : float
        P(marker) at every other site; 0 keeps the shortcut confined to one site.
    marker_size, marker_offset : float
        Side of the marker square and its distance from the image border, px at 128 px.
    marker_corner : str
        ``"top-left"``, ``"top-right"``, ``"bottom-left"`` or ``"bottom-right"``.
    marker_intensity : float
        Intensity of the marker token before site gain.
    marker_shape : str
        ``"L"`` (a lead side letter, the default), ``"square"`` (a filled square), ``"ring"``
        (an annulus) or ``"text"`` (a row of character-like blocks: burned-in text).
    marker_width : float, optional
        Width of the marker's box, px at 128 px; ``None``: ``marker_size`` (a square box).
        ``marker_size`` is then the box's height.
    marker_position : tuple of float, optional
        ``(row, column)`` of the marker box's top-left pixel, px at 128 px (scaled with the
        image size, like every size); anywhere in the image, including over the body. Overrides
        ``marker_corner`` and ``marker_offset``.
    p_device : float
        Share of images (any site, label or attribute) with a tube-like device line running
        from the top of the image into one lung: the *hidden factor*. It is recorded only in
        the truth table (column ``device``) and the card, never in the manifest. 0 (default)
        draws nothing, so the data are those of a generator without devices.
    device_lesion_factor : float
        Lesion contrast multiplier on device images (the device hides or fades the finding);
        1 is the harmless variant (device drawn, no effect on lesions).
    device_intensity, device_width : float
        Peak intensity of the line and its width in px at 128 px.
    sites : dict of str to SiteAcquisition
        Acquisition parameters per site.
    gain_pivot : float
        Intensity that site contrast gain leaves unchanged.
    background_level, tissue_level, lung_drop : float
        Outside-body intensity, soft-tissue intensity, and how much darker the lungs are.
    rib_amplitude, mediastinum_amplitude, lowfreq_amplitude : float
        Sizes of the anatomical texture terms.
    """

    prevalence: float = 0.40
    sex_probs: dict[str, float] = field(default_factory=lambda: {"F": 0.5, "M": 0.5})
    age_group_probs: dict[str, float] = field(
        default_factory=lambda: {"18-39": 0.30, "40-64": 0.40, "65+": 0.30}
    )
    site_probs: dict[str, float] = field(default_factory=lambda: {"A": 0.40, "B": 0.35, "C": 0.25})
    images_per_patient_probs: dict[int, float] = field(
        default_factory=lambda: {1: 0.60, 2: 0.20, 3: 0.12, 4: 0.08}
    )
    lesion_contrast_range: tuple[float, float] = (0.18, 0.30)
    faint_age_group: str = "65+"
    faint_factor: float = 0.30
    faint_where: dict[str, str] | None = None
    lesion_radius_range: tuple[float, float] = (4.0, 7.5)
    min_lesion_radius: float = 1.5
    marker_site: str = "C"
    p_marker_positive: float = 0.90
    p_marker_negative: float = 0.05
    p_marker_other_sites: float = 0.0
    marker_size: float = 10.0
    marker_offset: float = 4.0
    marker_corner: str = "top-left"
    marker_intensity: float = 0.92
    marker_shape: str = "L"
    marker_width: float | None = None
    marker_position: tuple[float, float] | None = None
    p_device: float = 0.0
    device_lesion_factor: float = 0.25
    device_intensity: float = 0.85
    device_width: float = 3.0
    sites: dict[str, SiteAcquisition] = field(default_factory=_default_sites)
    gain_pivot: float = 0.40
    background_level: float = 0.04
    tissue_level: float = 0.62
    lung_drop: float = 0.32
    rib_amplitude: float = 0.05
    mediastinum_amplitude: float = 0.06
    lowfreq_amplitude: float = 0.015

    def __post_init__(self) -> None:
        for name in ("sex_probs", "age_group_probs", "site_probs", "images_per_patient_probs"):
            probs = getattr(self, name)
            if not probs or abs(sum(probs.values()) - 1.0) > 1e-6:
                raise ValueError(f"{name} must be non-empty and sum to 1, got {probs}")
        if set(self.sites) != set(self.site_probs):
            raise ValueError("sites and site_probs must name the same sites")
        if self.faint_age_group not in self.age_group_probs:
            raise ValueError(f"faint_age_group {self.faint_age_group!r} is not an age group")
        if self.marker_site not in self.site_probs:
            raise ValueError(f"marker_site {self.marker_site!r} is not a site")
        if self.marker_corner not in ("top-left", "top-right", "bottom-left", "bottom-right"):
            raise ValueError(f"unknown marker_corner {self.marker_corner!r}")
        self._check_faint_where()
        self._check_marker_box()
        for name in (
            "prevalence",
            "p_marker_positive",
            "p_marker_negative",
            "p_marker_other_sites",
            "p_device",
            "device_lesion_factor",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1]")
        if min(self.images_per_patient_probs) < 1:
            raise ValueError("images_per_patient_probs keys must be >= 1")
        if self.device_width <= 0:
            raise ValueError("device_width must be > 0")

    def _check_faint_where(self) -> None:
        if self.faint_where is None:
            return
        groups = {"sex": self.sex_probs, "age_group": self.age_group_probs, "site": self.site_probs}
        if not self.faint_where:
            raise ValueError("faint_where must name at least one attribute (or be None)")
        for attr, group in self.faint_where.items():
            if attr not in groups:
                raise ValueError(
                    f"faint_where: unknown attribute {attr!r}; choose from {sorted(groups)}"
                )
            if group not in groups[attr]:
                raise ValueError(
                    f"faint_where: {group!r} is not a group of {attr}; choose from "
                    f"{list(groups[attr])}"
                )

    def _check_marker_box(self) -> None:
        if self.marker_shape not in MARKER_SHAPES:
            raise ValueError(
                f"unknown marker_shape {self.marker_shape!r}; choose from {list(MARKER_SHAPES)}"
            )
        width = self.marker_size if self.marker_width is None else self.marker_width
        if self.marker_size <= 0 or width <= 0:
            raise ValueError("marker_size and marker_width must be > 0")
        if self.marker_position is not None:
            row, col = self.marker_position
            if not (0 <= row <= 128 - self.marker_size and 0 <= col <= 128 - width):
                raise ValueError(
                    f"marker_position {self.marker_position} puts the {self.marker_size:g} x "
                    f"{width:g} marker box outside the 128 x 128 reference image; give the "
                    f"top-left pixel with row in [0, {128 - self.marker_size:g}] and column "
                    f"in [0, {128 - width:g}]"
                )

    @property
    def faint_conditions(self) -> dict[str, str]:
        """Attribute -> group conditions selecting the faint lesions (``faint_where`` or age)."""
        if self.faint_where is not None:
            return dict(self.faint_where)
        return {"age_group": self.faint_age_group}

    @property
    def marker_is_default_corner(self) -> bool:
        """Whether the marker is the original corner "L" (shape, size and place by corner)."""
        return all(getattr(self, k) == v for k, v in _ADDED_MARKER_KNOBS.items())

    def as_control(self) -> SyntheticConfig:
        """Return the same configuration with every injected effect switched off."""
        return replace(
            self,
            faint_factor=1.0,
            p_marker_positive=0.0,
            p_marker_negative=0.0,
            p_marker_other_sites=0.0,
            p_device=0.0,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (dict keys become strings)."""
        out = asdict(self)
        out["images_per_patient_probs"] = {
            str(k): v for k, v in self.images_per_patient_probs.items()
        }
        out["lesion_contrast_range"] = list(self.lesion_contrast_range)
        out["lesion_radius_range"] = list(self.lesion_radius_range)
        # Knobs added after 1.0.0 are recorded only when set, so that the card (card.json) of
        # every data set that could be generated before them stays byte-identical.
        for name, default in ADDED_KNOBS.items():
            if out[name] == default:
                del out[name]
            elif isinstance(out[name], tuple):
                out[name] = list(out[name])
        return out
