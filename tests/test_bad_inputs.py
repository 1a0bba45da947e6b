"""Bad inputs get a clear error before any work; odd but valid data gets a warning.

Issue 12, items 5 and 6: every case here used to give a raw internal error (KeyError,
IndexError, a conv RuntimeError, an autograd error, NotADirectoryError), a wrong message
("not found" for /dev/zero) or silently wrong groups ('1', '1.0' and 'True' as three groups).
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_audit_helpers import TinyCNN, tiny_model
from torch import nn

from xai_audit.audit import Audit, ConfigError
from xai_audit.data import Manifest, ManifestError, load_manifest, manifest_from_arrays, read_image
from xai_audit.data.errors import DataWarning
from xai_audit.fairness import evaluate_subgroups
from xai_audit.fairness._common import SubgroupWarning
from xai_audit.fairness.inputs import attribute_notes, group_keys
from xai_audit.model import ModelAdapter
from xai_audit.model.adapter import ModelOutputError

N, SIZE = 16, 16
#: The cheapest audit settings (only construction is exercised by most tests).
CHEAP = dict(
    methods=["gradcam"],
    n_boot=20,
    min_group_size=2,
    quality={"faithfulness": False, "sanity": False, "localisation": False, "shortcuts": False},
    exemplars_per_cell=1,
    batch_size=8,
)


def _manifest(channels: int = 1, n: int = N, **attrs) -> Manifest:
    rng = np.random.default_rng(0)
    images = rng.random((n, channels, SIZE, SIZE), dtype=np.float32)
    labels = np.arange(n) % 2
    attributes = {"sex": np.where(np.arange(n) % 4 < 2, "F", "M"), **attrs}
    return manifest_from_arrays(images, labels, attributes=attributes)


class _Wrap(nn.Module):
    """TinyCNN with its output passed through ``post`` (a broken model)."""

    def __init__(self, post) -> None:
        super().__init__()
        self.net = TinyCNN()
        self.post = post

    def forward(self, x: torch.Tensor):
        return self.post(self.net(x))


def _model(post=None) -> ModelAdapter:
    if post is None:
        return tiny_model()
    return ModelAdapter(_Wrap(post), class_names=["normal", "lesion"], device="cpu")


def _no_grad(out: torch.Tensor) -> torch.Tensor:
    return out.detach()


class _FrozenBackbone(nn.Module):
    """Features under no_grad, a trainable head: the output has a graph, not to the pixels."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyCNN()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feats = torch.flatten(self.net.pool(self.net.features(x)), 1)
        return self.net.head(feats)


# ---------------------------------------------------------------- errors at Audit(...)
@pytest.mark.parametrize(
    ("make_model", "channels", "fragment"),
    [
        # RGB images into a 1-channel model (was a raw conv RuntimeError)
        (
            lambda: _model(),
            3,
            r"first layer 'features.0' \(Conv2d\) expects 1 input channels but gets 3",
        ),
        # N-1 rows (was IndexError: boolean index did not match)
        (lambda: _model(lambda o: o[:-1]), 1, r"returned 1 rows of outputs .* for 2 images"),
        # integer class ids (was "element 0 of tensors does not require grad")
        (lambda: _model(lambda o: o.argmax(1)), 1, r"int64 outputs.*not class ids"),
        # N x 1 x 2 (was "returned 1 outputs")
        (lambda: _model(lambda o: o[:, None]), 1, r"shape \(2, 1, 2\) for 2 images.*flatten"),
        (lambda: _model(lambda o: o * float("nan")), 1, r"NaN or infinite outputs for 2 image"),
        # Grad-CAM (the CHEAP method) needs a gradient down to its layer (was an autograd error)
        (lambda: _model(_no_grad), 1, r"No gradient flows .* to the CAM target layer 'net"),
        (
            lambda: ModelAdapter(_FrozenBackbone(), class_names=["a", "b"], device="cpu"),
            1,
            r"No gradient flows from the model's output back to the CAM target layer 'net",
        ),
        (lambda: _model(lambda o: {"scores": o}), 1, r"dict without a 'logits' or 'out'"),
        (lambda: _model(lambda o: o.detach().numpy()), 1, r"returned ndarray, not a tensor"),
    ],
    ids=[
        "rgb-into-grey",
        "n-1-rows",
        "class-ids",
        "n-1-2",
        "nan",
        "no-grad",
        "frozen-backbone",
        "dict",
        "numpy",
    ],
)
def test_model_problems_are_found_by_one_probe(make_model, channels, fragment, tmp_path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match=fragment) as info:
        Audit(make_model(), _manifest(channels), sensitive=["sex"], output_dir=out, **CHEAP)
    assert len(info.value.problems) == 1  # one diagnosis, not a cascade
    assert not out.exists()  # before any work


class _Volume(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).mean(dim=(2, 3, 4)))


@pytest.mark.parametrize(
    ("make_model", "shape"),
    [
        # one logit per image, (N,) or N x 1 (no class names: the width is learnt)
        (lambda: ModelAdapter(_Wrap(lambda o: o[:, 1]), device="cpu"), (2, 1, SIZE, SIZE)),
        (lambda: ModelAdapter(_Wrap(lambda o: o[:, 1:]), device="cpu"), (2, 1, SIZE, SIZE)),
        (lambda: _model(lambda o: (o, o.sum())), (2, 1, SIZE, SIZE)),  # (logits, aux)
        (lambda: _model(lambda o: {"logits": o}), (2, 1, SIZE, SIZE)),
        (lambda: _model(lambda o: o.half().float()), (1, 1, SIZE, SIZE)),  # one image only
        (lambda: ModelAdapter(_Volume(), device="cpu"), (2, 1, 4, 8, 8)),  # 3D
        (  # BatchNorm in train mode fails on one image; the probe runs in eval mode
            lambda: ModelAdapter(
                nn.Sequential(
                    nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(1), nn.Linear(588, 2)
                ),
                device="cpu",
            ),
            (1, 1, SIZE, SIZE),
        ),
    ],
    ids=["single-logit", "n-by-1", "tuple", "dict", "one-image", "3d", "batchnorm-1-image"],
)
def test_valid_models_pass_the_probe(make_model, shape) -> None:
    # Clean controls: every output form ModelAdapter supports gives no problem.
    model = make_model()
    model.model.train()  # BatchNorm in train mode would fail on one image; the probe uses eval
    images = torch.rand(shape)
    assert model.check_inputs(images) == []
    assert model.check_inputs(images, gradients=None) == []
    assert model.check_inputs(images, gradients="layer") == []  # the CAM family


@pytest.mark.parametrize("post", [_no_grad, None], ids=["detached", "frozen-backbone"])
def test_pixel_gradient_methods_need_a_gradient_to_the_input(post) -> None:
    model = _model(post) if post else ModelAdapter(_FrozenBackbone(), device="cpu")
    images = _manifest().load_images([0, 1])
    problems = model.check_inputs(images)  # gradients="input": IG, saliency, SmoothGrad, ...
    assert len(problems) == 1 and "does not depend differentiably on its input" in problems[0]
    assert model.check_inputs(images, gradients=None) == []  # occlusion needs none
    with pytest.raises(ConfigError, match="does not depend differentiably"):
        Audit(model, _manifest(), sensitive=["sex"], **{**CHEAP, "methods": ["saliency"]})
    Audit(model, _manifest(), sensitive=["sex"], **{**CHEAP, "methods": ["occlusion"]})


def test_the_probe_leaves_a_good_model_as_it_was() -> None:
    model = _model()
    model.model.train()
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    assert model.check_inputs(_manifest().load_images([0, 1])) == []
    assert model.model.training  # train/eval state restored
    assert all(torch.equal(before[k], v) for k, v in model.model.state_dict().items())
    assert all(p.grad is None for p in model.model.parameters())  # no gradients left behind
    assert model.n_outputs == 2


def test_the_channel_check_sees_the_input_after_preprocess() -> None:
    # Grey images repeated to RGB for a 3-channel model: fine; without preprocess: refused.
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    grey = _manifest().load_images([0, 1])
    ok = ModelAdapter(net, device="cpu", preprocess=lambda x: x.repeat(1, 3, 1, 1))
    assert ok.check_inputs(grey) == []
    bad = ModelAdapter(net, device="cpu").check_inputs(grey)
    assert len(bad) == 1 and "expects 3 input channels but gets 1" in bad[0]


def test_wrong_image_size_into_an_mlp_names_the_layer() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8, 2))
    problems = ModelAdapter(net, device="cpu").check_inputs(_manifest().load_images([0, 1]))
    assert len(problems) == 1
    assert "'1' (Linear) expects 64 input features but gets 256" in problems[0]


def test_bad_outputs_also_fail_clearly_outside_the_audit() -> None:
    # The same check guards every forward pass (predict, explain), not only the probe.
    model = _model(lambda o: o[:-1])
    with pytest.raises(ModelOutputError, match="one row per image"):
        model.predict_proba(torch.zeros(4, 1, SIZE, SIZE))


def test_empty_data_is_refused(tmp_path: Path) -> None:
    table = pd.DataFrame({"case_id": [], "image": [], "label": [], "sex": []})
    with pytest.raises(ConfigError, match="the manifest has no rows"):
        Audit(_model(), Manifest(table), sensitive=["sex"], **CHEAP)
    csv = tmp_path / "empty.csv"
    csv.write_text("case_id,image,label,sex\n")
    with pytest.raises(ManifestError, match="has no rows .*add one row per image"):
        load_manifest(csv)
    csv.write_text("")
    with pytest.raises(ManifestError, match="is empty"):
        load_manifest(csv)
    with pytest.raises(ManifestError, match="has no rows"):
        load_manifest(table)


@pytest.mark.parametrize(
    ("make_path", "fragment"),
    [
        (lambda tmp: _touch(tmp / "result.txt"), r"'.*result.txt' is an existing file, not a"),
        (lambda tmp: _touch(tmp / "f") / "sub", r"cannot be created: '.*f' is a file"),
    ],
    ids=["file", "below-a-file"],
)
def test_output_dir_that_is_a_file_is_refused(make_path, fragment, tmp_path) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Audit(_model(), _manifest(), sensitive=["sex"], output_dir=make_path(tmp_path), **CHEAP)


def _touch(path: Path) -> Path:
    path.write_text("the user's file")
    return path


def test_every_problem_is_listed_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Audit(
            _model(lambda o: o.argmax(1)),
            _manifest(),
            sensitive=["sex", "race"],
            output_dir=_touch(tmp_path / "x"),
            **CHEAP,
        )
    text = str(info.value)
    assert "race" in text and "existing file" in text and "not class ids" in text


# ---------------------------------------------------------------- sources that are not files
def _fifo(tmp: Path) -> str:
    path = tmp / "pipe.png"
    os.mkfifo(path)
    return str(path)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs and /dev/zero")
@pytest.mark.parametrize(
    ("make_source", "fragment"),
    [
        (lambda tmp: "/dev/zero", r"not regular files .*'/dev/zero' is a device"),
        (_fifo, r"not regular files .*pipe.png' is a FIFO"),
        (lambda tmp: str(tmp), r"not regular files .* is a folder"),
    ],
    ids=["dev-zero", "fifo", "folder"],
)
def test_manifest_sources_that_are_not_regular_files(make_source, fragment, tmp_path) -> None:
    source = make_source(tmp_path)
    csv = tmp_path / "m.csv"
    pd.DataFrame({"case_id": ["a"], "image": [source], "label": [1]}).to_csv(csv, index=False)
    result: dict[str, BaseException] = {}

    def load() -> None:
        try:
            load_manifest(csv)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["exc"] = exc

    # A thread so that a regression (opening the FIFO) fails the test instead of hanging it.
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "load_manifest blocked on a FIFO or device"
    assert isinstance(result.get("exc"), ManifestError)
    assert pd.Series([str(result["exc"])]).str.contains(fragment).all(), str(result["exc"])
    assert "not found" not in str(result["exc"])
    with pytest.raises(ValueError, match="is not a regular file"):
        read_image(source)


def test_hashing_files_refuses_a_device() -> None:
    table = pd.DataFrame({"case_id": ["a"], "image": ["/dev/zero"], "label": [1]})
    manifest = Manifest(table)
    with pytest.raises(ManifestError, match="is a device, not a regular file"):
        manifest.content_hash(include_files=True)


# ---------------------------------------------------------------- one normalisation rule
@pytest.mark.parametrize(
    ("values", "expected", "mixed"),
    [
        ([1, 1.0, True, np.int64(1), 0, False], ["1", "1", "1", "1", "0", "0"], True),
        ([True, False, None], ["True", "False", "missing"], False),
        (["1", 1, "1.0", 2.50], ["1", "1", "1", "2.5"], True),
        (["01", "1", " F "], ["01", "1", "F"], False),  # strings only: labels, not numbers
        ([1.0, 2.0, np.nan], ["1", "2", "missing"], False),
        (np.float32([0.1, 3.0]), ["0.1", "3"], False),
        (pd.Series([1, None], dtype="Int64"), ["1", "missing"], False),
        (pd.Categorical([2.0, 1, 2]), ["2", "1", "2"], False),
        ([1, "x", None], ["1", "x", "missing"], True),
    ],
    ids=["num-bool", "bool-only", "num-str", "str-only", "float", "f32", "Int64", "cat", "x"],
)
def test_group_keys_follow_one_rule(values, expected, mixed) -> None:
    assert list(group_keys(values)) == expected
    notes = attribute_notes(values, "col")
    assert any("'col' mixes value types" in n for n in notes) == mixed


def test_one_one_point_zero_and_true_are_one_group_everywhere() -> None:
    rng = np.random.default_rng(1)
    n = 120
    y = rng.integers(0, 2, n)
    score = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
    grp = np.array([1, 1.0, True, 0, 0.0, False] * (n // 6), dtype=object)
    with pytest.warns(SubgroupWarning, match="'grp' mixes value types"):
        res = evaluate_subgroups(y, score, {"grp": grp}, n_boot=0, min_group_size=5)
    assert sorted(res.by_group["group"].unique()) == ["0", "1"]
    sizes = res.by_group.drop_duplicates("group").set_index("group")["n"]
    assert sizes.to_dict() == {"0": 60, "1": 60}


def test_the_audit_groups_and_warns_alike_in_every_table(tmp_path: Path) -> None:
    n = 24
    pid = [f"P{i // 2:03d}" for i in range(n)]  # two images per patient
    sex = np.where(np.arange(n) % 4 < 2, "F", "M").astype(object)
    sex[1] = "M"  # the patient of case_00000 / case_00001 now has F and M
    flag = np.array([1, 1.0, True, 0] * (n // 4), dtype=object)
    manifest = manifest_from_arrays(
        np.random.default_rng(0).random((n, 1, SIZE, SIZE), dtype=np.float32),
        np.arange(n) % 2,  # the two images of each patient differ in label
        attributes={"sex": sex, "flag": flag, "site": ["A"] * n},
        patient_ids=pid,
    )
    with pytest.warns(DataWarning) as caught:
        audit = Audit(
            _model(),
            manifest,
            sensitive=["sex", "flag", "site"],
            output_dir=tmp_path / "o",
            **CHEAP,
        )
    texts = [str(w.message) for w in caught]
    assert any("'flag' mixes value types (bool, number)" in t for t in texts)
    assert any("Disparity for site cannot be assessed: every case has site=A" in t for t in texts)
    assert any(
        "12 patient(s) (24 images) have images with different labels in 'label'" in t for t in texts
    )
    assert any(
        "1 patient(s) (2 images) have images with different values of 'sex' (e.g. the "
        "patients of cases case_00000)" in t
        for t in texts
    )
    assert not any("P000" in t for t in texts)  # patient ids are never printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = audit.run()
    assert set(result.predictions["flag"]) == {"0", "1"}
    assert set(result.subgroups["by_group"].query("attribute == 'flag'")["group"]) == {"0", "1"}
    assert result.data_summary["subgroup_sizes"]["flag"] == {"0": 6, "1": 18}
    assert set(result.exemplars["table"].query("attribute == 'flag'")["group"]) <= {"0", "1"}
    assert result.data_summary["warnings"] == audit.data_warnings
    data = [f for f in result.findings if f["title"].endswith("data warning(s)")]
    assert len(data) == 1 and data[0]["severity"] == "info" and "site=A" in data[0]["message"]


def test_widgets_group_with_the_same_rule() -> None:
    from xai_audit.widgets._metrics import make_grouping

    table = pd.DataFrame({"flag": pd.Series([1, 1.0, True, 0, None], dtype=object)})
    grouping = make_grouping(table, ["flag"])
    assert grouping.names == ["0", "1", "missing"]
    assert grouping.codes.tolist() == [1, 1, 1, 0, 2]


def test_quality_breakdowns_group_with_the_same_rule() -> None:
    from xai_audit.quality.groups import group_labels

    labels, order = group_labels(pd.Series([10, 2.0, True, "2", None], dtype=object))
    assert labels.tolist() == ["10", "2", "1", "2", "missing"]
    assert order == ["1", "2", "10", "missing"]  # numbers in numeric order


# ---------------------------------------------------------------- warnings
def test_many_numeric_values_are_binned_or_ask_for_binning() -> None:
    age = np.arange(140) % 140 + 20
    manifest = _manifest(n=140, age=age)
    # Binned automatically (ages above 130: not age-like, so quintiles), and said so.
    with pytest.warns(DataWarning, match=r"'age' \(140 distinct numeric values\) was binned "):
        audit = Audit(_model(), manifest, sensitive=["sex", "age"], **CHEAP)
    assert audit.data.table["age"].nunique() == 5
    # Kept raw on request: the warning names the option.
    with pytest.warns(DataWarning, match=r"'age' has 140 distinct numeric values.*attribute_bins"):
        Audit(_model(), manifest, sensitive=["sex", "age"], attribute_bins={"age": False}, **CHEAP)
    # A few numeric codes (e.g. a site number) are fine.
    assert attribute_notes(np.arange(140) % 5, "site") == []


def test_clean_data_gives_no_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        audit = Audit(_model(), _manifest(), sensitive=["sex"], **CHEAP)
    assert audit.data_warnings == []


@pytest.mark.parametrize(
    "quality, fragment",
    [
        ({"faithfulness_reference": "gaussian"}, "faithfulness_reference must be 'road'"),
        ({"sample_size": 1}, r"quality.sample_size must be an integer >= 2"),
        ({"n_steps": True}, r"quality.n_steps must be an integer >= 2"),
        ({"shortcut_scan": "yes"}, r"quality.shortcut_scan must be true or false"),
    ],
)
def test_quality_settings_are_checked_when_the_audit_is_built(quality, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment):
        settings = {**CHEAP, "quality": {**CHEAP["quality"], **quality}}
        Audit(_model(), _manifest(), sensitive=["sex"], **settings)
