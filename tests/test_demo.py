"""The demo world: generator determinism and ground truth, the build script end to end on a tiny world, and
the committed assets (manifest paths, models reproducing their recorded numbers, sample files)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from scipy import ndimage as ndi

from assets import demo_world as dw
from assets import make_demo as md
from verification import demo
from verification.io.images import load_image, to_tensor
from verification.io.models import load_model

TINY = md.DemoConfig(
    n_train=18,
    n_test=9,
    n_commit_test=6,
    n_reference=3,
    n_shortcut_train=9,
    n_shortcut_test=6,
    n_commit_shortcut=3,
    n_shifted=1,
    n_ood_train=6,
    n_ood_test=4,
    n_commit_ood=2,
    epochs_sound=1,
    epochs_shortcut=1,
    epochs_garbage=1,
    epochs_segmentation=1,
    seg_base=4,
    seg_crop=64,
    batch_size=9,
    threads=1,
    workers=1,
)


# ----------------------------------------------------------------------------------------------------
# Generator


def test_generator_is_deterministic_per_seed_split_and_index() -> None:
    a = md.make_case(7, "test", 4)
    b = md.make_case(7, "test", 4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.lesion_mask, b.lesion_mask)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, md.make_case(8, "test", 4).image)
    assert not np.array_equal(a.image, md.make_case(7, "reference", 4).image)
    assert a.image.dtype == np.uint8
    assert a.image.shape == (dw.SIZE, dw.SIZE)


@pytest.mark.parametrize("label", [1, 2])
def test_lesion_mask_covers_exactly_the_drawn_lesion(label: int) -> None:
    """Render the same seed with and without the lesion's density (same random draws): the pixels that change
    are the lesion's, and they lie inside its mask up to the edge blur."""
    for seed in range(3):
        with_lesion = dw.render_case(np.random.default_rng(seed), label)
        without = dw.render_case(np.random.default_rng(seed), label, lesion_strength=0.0)
        np.testing.assert_array_equal(with_lesion.lesion_mask, without.lesion_mask)
        mask = with_lesion.lesion_mask
        assert mask.any()
        assert not (mask & ~with_lesion.lung_mask).any(), "lesions lie inside the lungs"
        diff = with_lesion.image.astype(int) - without.image.astype(int)
        changed = np.abs(diff) > 2
        # edge blur: 0.8 px (nodule) or the lungs' own 1.8 px (effusion), plus ≤ 0.9 px acquisition blur
        reach = 3.0 if label == 1 else 5.0
        assert ndi.distance_transform_edt(~mask)[changed].max() <= reach
        # dense: brighter inside, clearly (≥ 20 grey levels on average) but not saturated
        assert diff[mask].mean() > 20
        assert with_lesion.image[mask].max() < 255


def test_normal_images_have_no_lesion_and_marker_mask_matches_the_tag() -> None:
    plain = dw.render_case(np.random.default_rng(3), 0)
    assert not plain.lesion_mask.any()
    assert not plain.marker_mask.any()
    for label in range(3):
        marked = dw.render_case(np.random.default_rng(3), 0, marker=label)
        changed = marked.image != plain.image
        assert changed.any()
        assert not (changed & ~marked.marker_mask).any()
        ys, xs = np.nonzero(marked.marker_mask)
        corner = dw.MARKERS[label][1]
        assert (ys.mean() < dw.SIZE / 2) == corner.startswith("top")
        assert (xs.mean() < dw.SIZE / 2) == corner.endswith("left")


def test_swapped_marker_never_matches_the_label_and_rotation_moves_masks() -> None:
    for i in range(9):
        case = md.make_case(1, "shortcut_swapped", i)
        assert case.meta["marker"] != case.label_name
    base = dw.render_case(np.random.default_rng(5), 1)
    rotated = dw.shift_case(base, "rotation", np.random.default_rng(0))
    assert rotated.lesion_mask.any()
    assert not np.array_equal(rotated.lesion_mask, base.lesion_mask)
    # the rotated nodule is still where the mask says: brighter than its surroundings
    ring = ndi.binary_dilation(rotated.lesion_mask, iterations=4) & ~ndi.binary_dilation(rotated.lesion_mask)
    assert rotated.image[rotated.lesion_mask].mean() > rotated.image[ring].mean()


def test_ood_train_and_test_sources_are_disjoint() -> None:
    assert not set(dw.OOD_NATURAL_TRAIN) & set(dw.OOD_NATURAL_TEST)
    sources = {md.make_case(1, "ood", i).meta["source"] for i in range(12)}
    assert not any(s.endswith(tuple(dw.OOD_NATURAL_TRAIN)) for s in sources if s.startswith("skimage"))


# ----------------------------------------------------------------------------------------------------
# The build script on a tiny world (same code path as the committed demo)


@pytest.mark.slow
def test_tiny_world_builds_and_trains_through_the_script(tmp_path: Path) -> None:
    manifest = md.run(TINY, tmp_path, ["data", "train"])
    assert manifest["schema_version"] == md.SCHEMA_VERSION
    for name in demo.MODEL_NAMES:
        path = demo.demo_model_path(name, root=tmp_path)
        loaded = load_model(path)
        assert loaded.class_names == tuple(manifest["models"][name]["class_names"])
    info = manifest["models"]
    assert 0.0 <= info["sound"]["test_accuracy"] <= 1.0
    assert info["garbage"]["class_names"][-1] == "garbage"
    assert set(info["segmentation"]["dice"]) >= {"nodule", "effusion", "lesion_vs_background"}
    ckpts = demo.demo_checkpoints(root=tmp_path)
    assert len(ckpts) == TINY.epochs_sound * TINY.checkpoints_per_epoch
    assert all(p.is_file() for p in ckpts)
    items = demo.demo_images("test", root=tmp_path)
    assert [i.label for i in items] == ["normal", "nodule", "effusion"] * 2
    assert items[1].lesion_mask is not None
    assert items[1].lesion_mask.is_file()
    assert items[0].lesion_mask is None
    # the committed split is the tiny world's own first images: same pixels as the generator gives
    np.testing.assert_array_equal(
        np.asarray(Image.open(items[2].path)), md.make_case(TINY.seed, "test", 2).image
    )


def test_data_stage_is_reproducible(tmp_path: Path) -> None:
    cfg = replace(TINY, n_commit_test=3, n_reference=0, n_commit_shortcut=1, n_shifted=1, n_commit_ood=1)
    md.stage_data(cfg, tmp_path / "a")
    md.stage_data(cfg, tmp_path / "b")
    for png in sorted((tmp_path / "a").rglob("*.png")):
        twin = tmp_path / "b" / png.relative_to(tmp_path / "a")
        np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(twin)))


# ----------------------------------------------------------------------------------------------------
# The committed demo


@pytest.fixture(scope="module")
def manifest() -> dict:
    return demo.load_manifest()


def test_committed_manifest_paths_exist_and_fit_the_size_budget(manifest: dict) -> None:
    root = demo.demo_root()
    for split in demo.demo_splits():
        for item in demo.demo_images(split):
            assert item.path.is_file(), item.path
            for mask in (item.lesion_mask, item.marker_mask):
                assert mask is None or mask.is_file()
    for name in demo.MODEL_NAMES:
        assert demo.demo_model_path(name).with_suffix(".json").is_file()
    assert len(demo.demo_checkpoints()) >= 10
    epochs = [c["epoch"] for c in demo.demo_checkpoint_info()]
    assert epochs == sorted(epochs)
    for sample in demo.demo_samples():
        assert sample["path"].is_file()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert total <= 30 * 1024 * 1024, f"demo assets are {total / 2**20:.1f} MiB"


def test_demo_api_errors_are_actionable() -> None:
    with pytest.raises(demo.DemoAssetsError, match="available"):
        demo.demo_images("no_such_split")
    with pytest.raises(demo.DemoAssetsError, match="available"):
        demo.demo_model_path("no_such_model")
    with pytest.raises(demo.DemoAssetsError, match="make_demo"):
        demo.load_manifest(Path("/nonexistent"))


def _accuracy(model_name: str, split: str) -> tuple[float, np.ndarray]:
    model = load_model(demo.demo_model_path(model_name))
    items = demo.demo_images(split)
    x = to_tensor([load_image(i.path) for i in items], model)
    with torch.inference_mode():
        pred = model.module(x).argmax(1).numpy()
    names = [model.class_names[p] for p in pred]
    labels = [i.label if i.label is not None else "garbage" for i in items]
    return float(np.mean([a == b for a, b in zip(names, labels)])), pred


TOL = 1.0 / 60 + 1e-6  # one image of a committed split


def test_committed_models_reproduce_the_manifest_numbers(manifest: dict) -> None:
    models = manifest["models"]
    acc, _ = _accuracy("sound", "test")
    assert abs(acc - models["sound"]["committed_test_accuracy"]) <= TOL
    assert models["sound"]["test_accuracy"] >= 0.9
    acc_marker, _ = _accuracy("shortcut", "shortcut")
    acc_swapped, _ = _accuracy("shortcut", "shortcut_swapped")
    assert abs(acc_marker - models["shortcut"]["committed_accuracy_with_marker"]) <= TOL
    assert abs(acc_swapped - models["shortcut"]["committed_accuracy_swapped_marker"]) <= TOL
    assert models["shortcut"]["accuracy_with_marker"] >= 0.9
    assert models["shortcut"]["accuracy_swapped_marker"] <= 0.45
    garbage = load_model(demo.demo_model_path("garbage"))
    assert garbage.garbage_class == "garbage"
    _, pred_ood = _accuracy("garbage", "ood")
    _, pred_id = _accuracy("garbage", "test")
    g = garbage.garbage_index
    assert abs(float(np.mean(pred_ood == g)) - models["garbage"]["committed_ood_rejection_rate"]) <= TOL
    assert abs(float(np.mean(pred_id == g)) - models["garbage"]["committed_id_false_rejection_rate"]) <= TOL
    assert models["garbage"]["ood_rejection_rate"] >= 0.95
    assert models["garbage"]["id_false_rejection_rate"] <= 0.05


def test_checkpoints_and_segmentation_load() -> None:
    first, last = demo.demo_checkpoints()[0], demo.demo_checkpoints()[-1]
    for path in (first, last):
        assert load_model(path).class_names == dw.CLASSES
    seg = load_model(demo.demo_model_path("segmentation"))
    assert seg.task == "segmentation"
    item = next(i for i in demo.demo_images("test") if i.label == "effusion")
    x = to_tensor(load_image(item.path), seg)
    with torch.inference_mode():
        out = seg.module(x)
    assert out.shape == (1, 3, dw.SIZE, dw.SIZE)
    mask = np.asarray(Image.open(item.lesion_mask)) > 127
    pred = out.argmax(1)[0].numpy() > 0
    dice = 2 * (pred & mask).sum() / (pred.sum() + mask.sum())
    assert dice > 0.5


def test_sample_dicoms_carry_proper_tags_and_the_same_picture() -> None:
    samples = {s["path"].name: s["path"] for s in demo.demo_samples()}
    png = np.asarray(Image.open(samples["cxr_nodule.png"])).astype(np.float32) / 255.0
    for name in ("cxr_nodule_cr_monochrome2.dcm", "cxr_nodule_dx_monochrome1.dcm"):
        ds = pydicom.dcmread(samples[name])
        assert str(ds.PatientName) == "DEMO^PATIENT"
        assert ds.Modality in ("CR", "DX")
        assert ds.SOPClassUID in ("1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1")
        assert ds.BitsAllocated == 16
        assert ds.BitsStored == 12
        assert float(ds.RescaleIntercept) == -1024.0
        stored = ds.pixel_array.astype(np.float32) / 4095.0
        if ds.PhotometricInterpretation == "MONOCHROME1":
            stored = 1.0 - stored
        np.testing.assert_allclose(stored, png, atol=0.5 / 255)
        loaded = load_image(samples[name])
        np.testing.assert_allclose(loaded.pixels, png, atol=1.5 / 255)


def test_sample_models_agree_across_formats() -> None:
    samples = [s for s in demo.demo_samples() if s["kind"] == "model"]
    assert {Path(s["file"]).suffix for s in samples} == {".safetensors", ".pt", ".pt2"}
    x = torch.randn(2, 1, dw.SIZE, dw.SIZE)
    outputs = []
    for s in samples:
        loaded = load_model(s["path"])
        assert loaded.class_names == dw.CLASSES
        with torch.inference_mode():
            outputs.append(loaded.module(x))
    for out in outputs[1:]:
        torch.testing.assert_close(out, outputs[0], atol=1e-4, rtol=1e-4)


def test_attention_numbers_show_lesion_versus_marker(manifest: dict) -> None:
    att = manifest["attention"]
    sound, shortcut = att["sound"]["shortcut"], att["shortcut"]["shortcut"]
    assert sound["pointing_game_tol8"] > shortcut["pointing_game_tol8"]
    assert shortcut["marker_energy"] > sound["marker_energy"]
    assert shortcut["marker_energy"] > 2 * shortcut["marker_area_share"]  # concentrated on the tag
    assert att["sound"]["test"]["pointing_game_tol8"] >= 0.4
    assert json.dumps(att)  # serialisable numbers only
