"""Reference bundles: building, leave-one-out values and bands, annotation references, save and load."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from verification.errors import BundleError, InputTooLargeError, ShapeError, UploadTooLargeError
from verification.io.budget import ResourceLimits
from verification.io.records import LoadedModel
from verification.metrics import compute_metrics
from verification.reference import (
    VerdictParams,
    boxes_to_masks,
    build_reference,
    build_reference_from_paths,
    compute_bands,
    load_boxes_json,
    load_bundle,
    reference_from_annotations,
    reference_from_maps,
)

SIZE = 32


def blob(cx: float, cy: float, s: float = 0.08, n: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1)
    return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)).astype(np.float32)


def blob_set(n: int, seed: int, top: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cy = 0.25 if top else 0.75
    return np.stack([blob(0.25 + 0.1 * rng.random(), cy + 0.1 * (rng.random() - 0.5)) for _ in range(n)])


class HalfScores(nn.Module):
    """Logit 0 = mean of the top half of the feature map, logit 1 = mean of the bottom half."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        h = a.shape[-2] // 2
        return torch.stack([a[:, 0, :h].mean((1, 2)), a[:, 0, h:].mean((1, 2))], dim=1)


class Flip(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, dims=[-1])


def toy_model(shortcut: bool, name: str) -> LoadedModel:
    """Grad-CAM of this model at ``features`` is the (ReLU'd) input itself — the weight of the single channel
    is the positive mean gradient — so the maps are known exactly. The 'shortcut' model looks at the mirror
    image: same predictions (top/bottom survive a left-right flip), attention in the wrong place."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    features = nn.Sequential(Flip(), conv) if shortcut else nn.Sequential(conv)
    module = nn.Sequential()
    module.add_module("features", features)
    module.add_module("head", HalfScores())
    return LoadedModel(
        module=module.eval(),
        in_channels=1,
        input_size=(SIZE, SIZE),
        class_names=("top", "bottom"),
        mean=(0.0,),
        std=(1.0,),
        source_format="module",
        content_hash=("b" if shortcut else "a") * 64,
        architecture="toy",
        name=name,
    )


def images_and_labels(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    top, bottom = blob_set(n, seed, True), blob_set(n, seed + 1, False)
    x = torch.from_numpy(np.concatenate([top, bottom]))[:, None]
    return x, ["top"] * n + ["bottom"] * n


def test_identical_reference_maps_give_zero_width_bands() -> None:
    maps = np.repeat(blob(0.3, 0.3)[None], 6, axis=0)
    bundle = reference_from_maps(maps, ["a"] * 6, ["a"], grid=(SIZE, SIZE))
    vals = bundle.calib_values
    np.testing.assert_allclose(vals, vals[:1].repeat(6, 0))  # every leave-one-out value is the same
    for j, m in enumerate(bundle.metrics):
        edge = bundle.band("a")[m][0 if bundle.bands_hi[0, j] == np.inf else 1]
        assert edge == pytest.approx(vals[0, j])  # zero-width band: the only value is the edge


def test_loo_values_and_percentile_bands_by_hand() -> None:
    maps = blob_set(8, 0, True)
    bundle = reference_from_maps(maps, [0] * 8, ["top"], grid=(SIZE, SIZE))
    loo = (maps.sum(0) - maps[3]) / 7
    expected = compute_metrics(maps[3], loo, bundle.metrics, size=None)
    for j, m in enumerate(bundle.metrics):
        assert bundle.calib_values[3, j] == pytest.approx(expected[m][0], abs=1e-5)
        lo, hi = bundle.band("top")[m]
        col = bundle.calib_values[:, j]
        if m in ("kl", "wasserstein"):
            assert lo == -np.inf
            assert hi == pytest.approx(np.percentile(col, 95))
        else:
            assert hi == np.inf
            assert lo == pytest.approx(np.percentile(col, 5))
    np.testing.assert_allclose(bundle.references[0], bundle.references[0].clip(0, 1))
    assert bundle.references[0].max() == pytest.approx(1.0)


def test_small_classes_use_pooled_bands() -> None:
    vals = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [10.0]])
    labels = np.array([0, 0, 0, 0, 0, 1])
    lo, hi, src = compute_bands(vals, labels, 2, ["iou"], VerdictParams(min_class_count=5))
    assert np.isinf(hi).all()  # a similarity is flagged only below its band
    assert src == ("class", "pooled")
    assert lo[0, 0] == pytest.approx(np.percentile([1, 2, 3, 4, 5], 5))
    assert lo[1, 0] == pytest.approx(np.percentile([1, 2, 3, 4, 5, 10], 5))


def test_reference_is_the_mean_map_of_the_correctly_classified_images() -> None:
    sound = toy_model(False, "sound")
    x_ref, y_ref = images_and_labels(10, seed=0)
    bundle = build_reference(sound, x_ref, y_ref, layer="features", grid=(SIZE, SIZE))
    assert bundle.counts.tolist() == [10, 10]
    assert bundle.layer == "features"
    assert bundle.model_hash == "a" * 64

    # Grad-CAM of the toy model at ``features`` is its (non-negative) input: the reference of a class is the
    # mean of its min-max normalised input blobs, min-max normalised again.
    def minmax(a: np.ndarray) -> np.ndarray:
        lo = a.min(axis=(-2, -1), keepdims=True)
        return (a - lo) / (a.max(axis=(-2, -1), keepdims=True) - lo)

    top = minmax(x_ref[:10, 0].numpy().astype(np.float64))
    np.testing.assert_allclose(bundle.references[0], minmax(top.mean(0)), atol=1e-5)


def test_save_load_roundtrip_and_mismatch_warnings(tmp_path: pytest.TempPathFactory) -> None:
    sound, shortcut = toy_model(False, "sound"), toy_model(True, "shortcut")
    x_ref, y_ref = images_and_labels(6, seed=0)
    bundle = build_reference(sound, x_ref, y_ref, layer="features", grid=(SIZE, SIZE))
    path = bundle.save(tmp_path / "ref")  # type: ignore[operator]
    doc = json.loads(path.with_suffix(".json").read_text())
    assert doc["schema_version"] == 2
    assert doc["model_hash"] == "a" * 64
    assert doc["preprocessing"] == {"input_size": [SIZE, SIZE], "mean": [0.0], "std": [1.0], "channels": 1}
    assert set(doc["bands"]["top"]) == {*bundle.metrics, "source"}
    with pytest.warns(UserWarning, match="no verdict calibration"):
        back = load_bundle(path, model=sound, method="gradcam", layer="features")
    assert len(back.warnings) == 1  # built without calibration: said, never silently passed
    assert back.calibration is None
    np.testing.assert_array_equal(back.references, bundle.references)
    np.testing.assert_array_equal(back.bands_lo, bundle.bands_lo)
    assert back.class_names == bundle.class_names
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        other = load_bundle(path, model=shortcut, method="layercam", layer="head")
    assert len(other.warnings) == 4
    assert [str(r.message) for r in rec] == list(other.warnings)
    assert all(r.category is UserWarning for r in rec)
    assert "not the model" in other.warnings[0]
    assert any("method differs" in w for w in other.warnings)


def test_load_rejects_other_schema_and_missing_files(tmp_path: pytest.TempPathFactory) -> None:
    bundle = reference_from_maps(blob_set(4, 1, True), [0] * 4, ["top"], grid=(SIZE, SIZE))
    path = bundle.save(tmp_path / "b")  # type: ignore[operator]
    doc = json.loads(path.with_suffix(".json").read_text())
    doc["schema_version"] = 99
    path.with_suffix(".json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="schema_version"):
        load_bundle(path)
    with pytest.raises(BundleError, match="needs both"):
        load_bundle(tmp_path / "missing")  # type: ignore[operator]


def test_annotation_references_from_png_masks_and_boxes(tmp_path: pytest.TempPathFactory) -> None:
    masks = boxes_to_masks([[[2, 3, 6, 5]], [[0, 0, 2, 2], [30, 30, 40, 40]]], (32, 32))
    assert masks[0].sum() == 8
    assert masks[0, 3:5, 2:6].all()
    assert masks[1].sum() == 4 + 4
    paths = []
    for i in range(6):
        m = np.zeros((32, 32), np.uint8)
        m[8 + i : 16 + i, 8:16] = 255
        p = tmp_path / f"m{i}.png"  # type: ignore[operator]
        Image.fromarray(m).save(p)
        paths.append(p)
    bundle = reference_from_annotations(paths, ["top"] * 6, ["top"], grid=(SIZE, SIZE))
    assert bundle.source == "annotation"
    assert bundle.references[0][14, 12] == pytest.approx(1.0)  # rows 13-15 are inside every mask
    # With the trusted model's maps, bands describe those maps against the annotation reference.
    cal = blob_set(6, 3, True)
    b2 = reference_from_annotations(paths, ["top"] * 6, ["top"], calibration_maps=cal, grid=(SIZE, SIZE))
    expected = compute_metrics(cal, b2.references[[0] * 6], b2.metrics, size=None)
    np.testing.assert_allclose(b2.calib_values[:, 0], expected[b2.metrics[0]], atol=1e-6)
    spec = {"image_size": [32, 32], "images": [{"image": "a.png", "label": "top", "boxes": [[2, 3, 6, 5]]}]}
    jpath = tmp_path / "boxes.json"  # type: ignore[operator]
    jpath.write_text(json.dumps(spec))
    names, labels, jm = load_boxes_json(jpath)
    assert names == ["a.png"]
    assert labels == ["top"]
    np.testing.assert_array_equal(jm[0], masks[0])
    jpath.write_text("{}")
    with pytest.raises(BundleError, match="box annotations"):
        load_boxes_json(jpath)


def test_box_annotations_are_bounded_before_allocating(tmp_path: pytest.TempPathFactory) -> None:
    # 60 bytes of JSON declaring 1,000 masks of 100,000² (40 TB as float32): refused, nothing allocated
    spec = {"image_size": [100_000, 100_000], "images": [{"image": "a", "label": "x"}] * 1000}
    jpath = tmp_path / "huge.json"  # type: ignore[operator]
    jpath.write_text(json.dumps(spec))
    with pytest.raises(InputTooLargeError, match="box masks of 100000×100000"):
        load_boxes_json(jpath)
    small = ResourceLimits(max_decoded_bytes=3 * 32 * 32 * 4 - 1)  # one byte short of three 32² masks
    with pytest.raises(InputTooLargeError, match="limit for decoded annotations"):
        boxes_to_masks([[], [], []], (32, 32), small)
    assert boxes_to_masks([[], []], (32, 32), small).shape == (2, 32, 32)
    with pytest.raises(ShapeError, match="positive"):
        boxes_to_masks([[]], (0, 32))
    jpath.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(BundleError, match="box annotations"):
        load_boxes_json(jpath)


def test_annotation_references_default_to_the_masks_own_grid() -> None:
    masks = boxes_to_masks([[[2, 3, 30, 40]], [[4, 5, 20, 33]], [[1, 1, 9, 9]]], (48, 40))
    bundle = reference_from_annotations(masks, ["top"] * 3, ["top"])
    assert bundle.grid == (48, 40)  # not the 64×64 default: the annotations are the references
    # the mean mask, min-max normalised (its minimum is 0: a corner outside every box); no resampling
    mean = masks.mean(0)
    np.testing.assert_allclose(bundle.references[0], mean / mean.max(), atol=1e-6)
    with pytest.raises(ShapeError, match="2 sizes"):
        reference_from_annotations([masks[0], np.zeros((32, 32), np.float32)], ["top"] * 2, ["top"])


def test_building_from_files_skips_unreadable_ones_and_reads_the_mask_folder(tmp_path: Path) -> None:
    sound = toy_model(False, "sound")
    x, y = images_and_labels(3, seed=5)
    (tmp_path / "img").mkdir()
    (tmp_path / "les").mkdir()
    paths = []
    for i, pic in enumerate(x[:, 0].numpy()):
        p = tmp_path / "img" / f"{i:02d}.png"
        Image.fromarray(np.round(pic / pic.max() * 255).astype(np.uint8)).save(p)
        paths.append(p)
    (tmp_path / "img" / "bad.png").write_bytes(b"not a png")
    Image.fromarray(np.full((SIZE, SIZE), 255, np.uint8)).save(tmp_path / "les" / "00_lesion.png")
    labels = [0 if c == "top" else 1 for c in y]
    files = [*paths, tmp_path / "img" / "bad.png"]
    plain, used, skipped = build_reference_from_paths(
        sound, files, [*labels, 0], layer="features", calibrate=False
    )
    assert (used, skipped) == (6, 1)
    assert plain.grid == (64, 64)  # no annotation: the default comparison grid
    # one mask found by its file name: the annotations make the grid the model's input resolution
    annotated, _, _ = build_reference_from_paths(
        sound, paths, labels, layer="features", calibrate=False, annotation_dir=tmp_path / "les"
    )
    assert annotated.grid == (SIZE, SIZE)
    # decoded in threads: the same references, in the same order
    threaded, used2, skipped2 = build_reference_from_paths(
        sound, files, [*labels, 0], layer="features", calibrate=False, workers=2
    )
    assert (used2, skipped2) == (6, 1)
    np.testing.assert_array_equal(threaded.references, plain.references)
    # the images are held together: past the decoded budget the build stops, it does not skip on silently
    one = SIZE * SIZE * 5  # what one grey image keeps (float32 pixels + uint8 display)
    with pytest.raises(UploadTooLargeError, match="held in memory together"):
        build_reference_from_paths(
            sound, paths, labels, layer="features", calibrate=False,
            limits=ResourceLimits(max_decoded_bytes=3 * one),
        )  # fmt: skip
