"""The rules an interactive front end follows (verification.interactive), without Streamlit: method groups and
their interactive settings, what a map explains, one image of a batched result, the layers and reference
maps to show, and which images count as labelled."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from verification import demo, interactive
from verification.cam import compute_cams, list_methods
from verification.cam.records import CamResult
from verification.cam.targets import ClassLogit, MultiLabel, SegmentationTarget
from verification.errors import ImageLoadError
from verification.io.images import load_image, to_tensor
from verification.io.models import load_model
from verification.reference import load_bundle


@dataclass(frozen=True)
class _Item:
    label: str | None


def test_the_backend_rules_load_without_streamlit() -> None:
    modules = ("interactive", "uploads", "summary", "server_paths")  # the dashboard's rules, moved out of ui/
    imports = ", ".join(f"verification.{m}" for m in modules)
    code = f"import sys, {imports}; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_every_registered_method_is_offered_once_with_a_label() -> None:
    assert sorted(interactive.ALL_METHODS) == sorted(list_methods())
    assert len(set(interactive.ALL_METHODS)) == len(interactive.ALL_METHODS)
    assert set(interactive.METHOD_LABELS) == set(interactive.ALL_METHODS)
    assert interactive.METHOD_LABELS["scorecam"].endswith("(fast, 64 forwards)")
    assert interactive.DEFAULT_METHOD in interactive.ONE_PASS_METHODS
    assert interactive.per_label_method(interactive.DEFAULT_METHOD)
    assert not interactive.per_label_method("scorecam")
    assert not interactive.per_label_method("no such method")


def test_interactive_settings_by_hand() -> None:
    # 224 // 7 = 32-pixel patches moved by 16: (224 - 32) / 16 + 1 = 13 positions per side
    assert interactive.occlusion_grid((224, 224)) == {"window": (32, 32), "stride": (16, 16)}
    # never a zero-sized patch
    assert interactive.occlusion_grid((5, 3)) == {"window": (1, 1), "stride": (1, 1)}
    assert interactive.method_options("occlusion", (224, 112)) == {
        "occlusion": {"window": (32, 16), "stride": (16, 8)}
    }
    assert interactive.method_options("scorecam", (224, 224)) == {"scorecam": {"mode": "fast", "k": 64}}
    assert interactive.method_options("gradcam", (224, 224)) is None


def test_a_target_choice_builds_the_backend_target() -> None:
    assert isinstance(interactive.TargetChoice().build(), ClassLogit)
    assert isinstance(interactive.TargetChoice("multilabel", 2).build(), MultiLabel)
    seg = interactive.TargetChoice("segmentation", 1, 0.7).build()
    assert isinstance(seg, SegmentationTarget)
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 1, 0, 0] = 5.0  # σ(5) ≈ 0.993 ≥ 0.7; σ(0) = 0.5 < 0.7 elsewhere
    region = interactive.TargetChoice("segmentation", 1, 0.7).region(logits)
    assert region.tolist() == [[True, False], [False, False]]


def _result(n: int) -> CamResult:
    rng = np.random.default_rng(0)
    return CamResult(
        method="gradcam",
        layer="layer4",
        raw=rng.random((n, 2, 2), dtype=np.float32),
        maps=rng.random((n, 4, 4), dtype=np.float32),
        targets=tuple(range(n)),
        target_kind="logit",
        logits=rng.random((n, 3), dtype=np.float32),
        probs=rng.random((n, 3), dtype=np.float32),
        constant=np.array([k % 2 == 0 for k in range(n)]),
        provenance={"method": "gradcam"},
    )


def test_one_sample_of_a_batched_result_is_that_samples_rows_copied() -> None:
    assert interactive.can_split()
    batch = _result(3)
    one = interactive.split_result(batch, 1)
    for name in ("raw", "maps", "logits", "probs", "constant"):
        np.testing.assert_array_equal(getattr(one, name), getattr(batch, name)[1:2])
    assert one.targets == (1,)
    one.maps[0, 0, 0] = -1.0
    assert batch.maps[1, 0, 0] != -1.0, "a copy: the batch can be freed"


def test_a_batched_map_split_equals_the_map_computed_alone() -> None:
    model = load_model(demo.demo_model_path("sound"))
    images = [load_image(e.path) for e in demo.demo_images("test")[:2]]
    batch = compute_cams(model, to_tensor(images, model), methods=["gradcam"])[0]
    alone = compute_cams(model, to_tensor(images[1], model), methods=["gradcam"])[0]
    np.testing.assert_allclose(interactive.split_result(batch, 1).maps, alone.maps, atol=1e-5)
    assert interactive.split_result(batch, 1).targets == alone.targets


def test_layer_choices_are_spatial_deepest_first_with_the_default_among_them() -> None:
    model = load_model(demo.demo_model_path("sound"))
    shapes, default = interactive.layer_choices(model)
    assert default in shapes
    in_model_order = [name for name, _ in model.module.named_modules() if name in shapes]
    assert list(shapes) == in_model_order[::-1], "deepest first"
    assert all(len(v.split("×")) == 3 for v in shapes.values())


def test_reference_maps_only_for_classes_the_bundle_has_images_of() -> None:
    bundle = load_bundle(demo.demo_reference_bundle())
    name = bundle.class_names[0]
    found = interactive.reference_map(bundle, name)
    assert found is not None
    np.testing.assert_array_equal(found, np.asarray(bundle.references[0]))
    assert interactive.reference_map(bundle, "no such class") is None
    assert interactive.method_of(bundle) == (bundle.method or interactive.DEFAULT_METHOD)
    assert interactive.method_of(None) == interactive.DEFAULT_METHOD


def test_labels_for_verify_are_none_when_no_image_has_one() -> None:
    assert interactive.labels_or_none([_Item(None), _Item(None)]) is None
    assert interactive.labels_or_none([_Item("a"), _Item(None)]) == ["a", None]
    assert interactive.labels_or_none([]) is None


def test_the_c_score_takes_images_of_the_series_classes_and_needs_four() -> None:
    items = [_Item("a"), _Item("b"), _Item("x"), _Item(None), _Item("a"), _Item("b")]
    assert interactive.labelled_for_classes(items, ("a", "b"), advice="upload more") == [
        items[0],
        items[1],
        items[4],
        items[5],
    ]
    with pytest.raises(ImageLoadError, match=r"classes \(a, b\): upload more\.$"):
        interactive.labelled_for_classes(items[:3], ("a", "b"), advice="upload more")


def test_a_folder_of_class_folders_gives_labels_else_none(tmp_path: Path) -> None:
    png = demo.demo_images("test")[0].path.read_bytes()
    for cls in ("normal", "nodule"):
        (tmp_path / "set" / cls).mkdir(parents=True)
        (tmp_path / "set" / cls / "x.png").write_bytes(png)
    paths, labels = interactive.folder_images(tmp_path / "set")
    assert sorted(zip([p.parent.name for p in paths], labels)) == [("nodule", "nodule"), ("normal", "normal")]
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "y.png").write_bytes(png)
    paths, labels = interactive.folder_images(tmp_path / "flat")
    assert [p.name for p in paths] == ["y.png"]
    assert labels == [None]


def test_a_folder_that_cannot_be_listed_is_an_image_load_error(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"not a folder")
    with pytest.raises(ImageLoadError):
        interactive.folder_images(tmp_path / "x.png")  # listing it raises NotADirectoryError
    with pytest.raises(ImageLoadError):
        interactive.folder_images(tmp_path / "gone")


# ---------------------------------------------------------------------------------------------- records
# Rules the pages decided themselves before (#16), now properties of the backend's records.


def test_a_line_votes_when_decisive_and_not_uninformative() -> None:
    from verification.verdict import LineResult

    assert LineResult("E1", "task", "fail", decisive=True).votes
    assert not LineResult("E5", "agreement", "pass", decisive=False).votes
    assert not LineResult("E6", "faithfulness", "uninformative", decisive=True).votes


def test_feature_channels_outside_two_std_and_a_broad_shift_above_a_fifth() -> None:
    from verification.features import BROAD_SHIFT_RATE, ChannelStats, FeatureShiftReport

    stats = ChannelStats(
        "conv1",
        "mean",
        image=np.array([0.0, 2.9, 3.1, -1.5]),
        ref_mean=np.array([0.0, 1.0, 1.0, 0.0]),
        ref_std=np.array([1.0, 1.0, 1.0, 0.5]),
    )
    lo, hi = stats.band()
    np.testing.assert_array_equal(lo, [-2.0, -1.0, -1.0, -1.0])
    np.testing.assert_array_equal(hi, [2.0, 3.0, 3.0, 1.0])
    assert stats.outside().tolist() == [False, False, True, True]

    def shift(flags: list[bool]) -> FeatureShiftReport:
        n = len(flags)
        return FeatureShiftReport(
            tuple(f"i{k}" for k in range(n)),
            score=np.zeros(n),
            structure_ssim=np.ones(n),
            score_flag=np.array(flags, dtype=bool),
            ssim_flag=np.zeros(n, dtype=bool),
            score_max=1.0,
            ssim_min=0.5,
        )

    assert BROAD_SHIFT_RATE == 0.2
    assert not shift([True] + [False] * 4).broad_shift  # 1 of 5 = 0.2: not above
    assert shift([True, True] + [False] * 3).broad_shift
    assert not shift([]).broad_shift


class _Report:
    """The two members of a VerificationReport that the charted line reads."""

    def __init__(self, deciding: str | None, keys: tuple[str, ...]) -> None:
        from verification.verdict import LineResult

        self.deciding_line = deciding
        self.lines = tuple(LineResult(k, k, "pass", decisive=True) for k in keys)

    def line(self, key: str) -> object:
        return next((ln for ln in self.lines if ln.key == key), None)

    @property
    def deciding_lines(self) -> tuple[str, ...]:  # VerificationReport's own rule, on these two members
        from verification.verdict import VerificationReport

        return VerificationReport.deciding_lines.fget(self)  # type: ignore[attr-defined,arg-type,no-any-return]


def test_the_charted_line_is_e3_among_the_deciding_lines_else_the_first_never_e0() -> None:
    both = _Report("E1+E3+E4", ("E0", "E1", "E3", "E4"))
    assert both.deciding_lines == ("E1", "E3", "E4")
    assert interactive.charted_line(both).key == "E3"
    assert interactive.charted_line(_Report("E4", ("E3", "E4"))).key == "E4"
    assert interactive.charted_line(_Report("E0", ("E0",))) is None
    assert interactive.charted_line(_Report(None, ("E3",))) is None
    assert _Report("", ()).deciding_lines == ()
