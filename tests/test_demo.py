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
    n_cue_train=9,
    n_cue_test=6,
    n_commit_cue=3,
    epochs_sound=1,
    epochs_shortcut=1,
    epochs_cue=1,
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
    manifest = md.run(TINY, tmp_path, ["data", "train", "evaluate"])
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
    assert set(demo.demo_models("healthy", root=tmp_path)) == set(demo.HEALTHY_MODELS)
    assert set(demo.demo_models("shortcut", root=tmp_path)) == set(demo.SHORTCUT_MODELS)
    assert info["shortcut_texture"]["kind"] == "shortcut:texture"
    for record in info.values():  # the evaluate stage's record of every classifier
        if record["kind"] == "segmentation":
            continue
        assert set(record["accuracy"]) >= {"test", "cue_token", "cue_token_swapped", "test_lesion_free"}
        assert len(record["committed_predictions"]["test"]) == TINY.n_commit_test
        assert record["expected_verdict"]["ood"] == "CANNOT VERIFY"
    assert info["garbage"]["accuracy"]["ood"] == pytest.approx(
        info["garbage"]["committed_ood_rejection_rate"]
    )
    lung = items[1].load_mask("lung")
    assert lung is not None
    np.testing.assert_array_equal(lung, md.make_case(TINY.seed, "test", 1).lung_mask)
    twins = demo.demo_twins("test", root=tmp_path)
    assert [t.label for _, t in twins] == ["normal"] * 4
    assert all(o.label != "normal" for o, _ in twins)


def test_data_stage_is_reproducible(tmp_path: Path) -> None:
    cfg = replace(
        TINY, n_commit_test=3, n_reference=0, n_commit_shortcut=1, n_shifted=1, n_commit_ood=1, n_commit_cue=1
    )
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
    mask = item.load_mask("lesion")
    assert mask is not None
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


# ----------------------------------------------------------------------------------------------------
# Shortcut cues, masks and lesion-free twins


def _base(label: int, seed: int = 11) -> dw.Case:
    return dw.render_case(np.random.default_rng(seed), label)


@pytest.mark.parametrize("kind", dw.CUE_KINDS)
def test_cues_are_pure_functions_of_their_seed_and_strength(kind: str) -> None:
    base = _base(1)
    a = dw.apply_cue(base, kind, 2, np.random.default_rng(3))
    b = dw.apply_cue(base, kind, 2, np.random.default_rng(3))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.meta == b.meta
    assert not np.array_equal(a.image, dw.apply_cue(base, kind, 2, np.random.default_rng(4)).image)
    assert not np.array_equal(a.image, base.image)
    # strength 0 leaves the film as it was; the other ground truth is untouched at any strength
    np.testing.assert_array_equal(
        dw.apply_cue(base, kind, 2, np.random.default_rng(3), 0.0).image, base.image
    )
    for field in ("lesion_mask", "marker_mask", "lung_mask"):
        np.testing.assert_array_equal(getattr(a, field), getattr(base, field))
    assert a.label == base.label
    assert a.meta["cue"] == kind
    assert a.meta["cue_class"] == "effusion"
    with pytest.raises(ValueError, match="cue class"):
        dw.apply_cue(base, kind, 3, np.random.default_rng(3))
    with pytest.raises(ValueError, match="strength"):
        dw.apply_cue(base, kind, 0, np.random.default_rng(3), 1.5)


@pytest.mark.parametrize("cls", range(3))
def test_token_lies_outside_the_lungs_in_its_class_zone(cls: int) -> None:
    for seed in range(4):
        base = _base(seed % 3, seed)
        cued = dw.apply_cue(base, "token", cls, np.random.default_rng(seed))
        disc = cued.cue_mask
        assert disc is not None
        assert disc.sum() > 40
        assert not (disc & ndi.binary_dilation(base.lung_mask, iterations=2)).any()
        changed = cued.image != base.image
        assert changed.any()
        assert not (changed & ~disc).any()
        y0, y1, x0, x1 = (round(f * dw.SIZE) for f in dw.TOKEN_ZONES[cls])
        cy, cx = cued.meta["cue_info"]["center"]
        assert y0 <= cy < y1
        assert x0 <= cx < x1
        assert np.median(cued.image[disc]) >= 0.85 * 255  # bright: a metal-dense disc
        assert cued.image[disc].mean() > base.image[disc].mean() + 20


def test_texture_changes_only_the_lungs_and_codes_the_class_by_orientation() -> None:
    base = _base(0)
    spectra = []
    for cls in range(3):
        cued = dw.apply_cue(base, "texture", cls, np.random.default_rng(1))
        diff = cued.image.astype(float) - base.image.astype(float)
        assert not (diff != 0)[~base.lung_mask].any()
        assert cued.cue_mask is not None
        np.testing.assert_array_equal(cued.cue_mask, base.lung_mask)
        assert 1.0 <= np.abs(diff[base.lung_mask]).max() <= 255 * dw.TEXTURE_AMPLITUDE + 1  # faint
        power = np.abs(np.fft.fftshift(np.fft.fft2(diff))) ** 2
        fy, fx = np.unravel_index(np.argmax(power), power.shape)
        angle = np.rad2deg(np.arctan2(fy - dw.SIZE // 2, fx - dw.SIZE // 2)) % 180
        spectra.append(angle)
    # the spectral peak points along each class's grating direction (within the jitter and the FFT grid)
    for cls, angle in enumerate(spectra):
        target = dw.TEXTURE_ANGLES[cls] % 180
        assert min(abs(angle - target), 180 - abs(angle - target)) < 12, (cls, angle)


def test_acquisition_cue_sets_exposure_and_noise_per_hospital() -> None:
    base = _base(0)
    lungs = base.lung_mask
    means, grain = [], []
    for cls in range(3):
        cued = dw.apply_cue(base, "acquisition", cls, np.random.default_rng(2))
        img = cued.image.astype(float)
        means.append(img[lungs].mean())
        residual = img - ndi.uniform_filter(img, 5)
        grain.append(residual[lungs].std())
        info = cued.meta["cue_info"]
        assert info["hospital"] == "ABC"[cls]
        assert cued.cue_mask is None  # the whole film carries the cue
    # gamma < 1 brightens: hospital A > B > C on the same film
    assert means[0] > means[1] > means[2]
    # B adds the most fine-grained (white) noise
    assert grain[1] > grain[0]
    assert grain[1] > grain[2]


def test_swapped_cue_never_matches_the_label() -> None:
    for kind in dw.CUE_KINDS:
        for i in range(3):
            swapped = md.make_case(1, f"cue_{kind}_swapped", i)
            assert swapped.meta["cue_class"] != swapped.label_name
            assert md.make_case(1, f"cue_{kind}", i).meta["cue_class"] == dw.CLASSES[i % 3]


def _twin_difference_is_local(original: np.ndarray, twin: np.ndarray, lesion: np.ndarray) -> None:
    """How a twin differs from its original: anywhere within 5 px of the lesion; by at most 1 grey level from
    5 to 12 px (the tail of the effusion's 1 px sigmoid edge and the acquisition blur); not at all beyond."""
    diff = np.abs(original.astype(int) - twin.astype(int))
    dist = ndi.distance_transform_edt(~lesion)
    assert diff[dist > 5].max(initial=0) <= 1
    assert diff[dist > 12].max(initial=0) == 0
    assert (original.astype(int) - twin.astype(int))[lesion].mean() > 20  # the finding is gone


def test_lesion_free_twin_is_the_same_case_without_the_lesion() -> None:
    for label in (1, 2):
        for seed in range(4):
            original, twin = dw.lesion_free_twin(np.random.default_rng(seed), label)
            rendered = dw.render_case(np.random.default_rng(seed), label)
            np.testing.assert_array_equal(original.image, rendered.image)
            np.testing.assert_array_equal(original.lesion_mask, twin.lesion_mask)
            np.testing.assert_array_equal(original.lung_mask, twin.lung_mask)
            _twin_difference_is_local(original.image, twin.image, original.lesion_mask)
    for split in ("test", "cue_texture", "cue_token", "shortcut"):
        a, b = md.make_case(3, split, 4), md.make_case(3, split + md.LESION_FREE, 4)
        _twin_difference_is_local(a.image, b.image, a.lesion_mask)


def test_rotation_shift_moves_the_lung_mask_with_the_film() -> None:
    base = _base(1)
    rotated = dw.shift_case(base, "rotation", np.random.default_rng(0))
    assert not np.array_equal(rotated.lung_mask, base.lung_mask)
    assert not (rotated.lesion_mask & ~rotated.lung_mask).any()
    # lungs are dark on the rotated film too
    assert rotated.image[rotated.lung_mask].mean() < rotated.image[~rotated.lung_mask].mean()


# ----------------------------------------------------------------------------------------------------
# The committed demo: masks, twins, models and their recorded numbers


def test_every_committed_chest_image_has_its_masks_and_lesions_lie_in_the_lungs() -> None:
    n_chest = 0
    for split in demo.demo_splits():
        for item in demo.demo_images(split):
            lungs = item.load_mask("lung")
            if item.label is None:  # out of distribution: no anatomy to mark
                assert split == "ood"
                assert lungs is None
                continue
            n_chest += 1
            assert lungs is not None, item.path
            assert lungs.shape == (dw.SIZE, dw.SIZE)
            assert 0.15 < lungs.mean() < 0.6
            lesion = item.load_mask("lesion")
            if item.twin_of is None:
                assert (lesion is not None) == (item.label != "normal"), item.path
            else:
                lesion = item.load_mask("removed_lesion")
                assert lesion is not None
            if lesion is not None:
                assert lesion.any()
                assert not (lesion & ~lungs).any(), item.path
            cue = item.load_mask("cue")
            kind = dict(item.meta).get("cue")
            assert (cue is not None) == (kind in ("token", "texture")), item.path
            if kind == "token":
                assert cue is not None
                assert not (cue & lungs).any()
    assert n_chest >= 400


def test_committed_twins_differ_from_their_originals_only_at_the_lesion() -> None:
    """As ``_twin_difference_is_local`` says, except that some committed originals were rendered on another
    machine whose float rounding differs by 1 grey level on 1-2 pixels of an image."""
    pairs = demo.demo_twins("test")
    assert len(pairs) == sum(i.label != "normal" for i in demo.demo_images("test"))
    assert {o.label for o, _ in pairs} == {"nodule", "effusion"}
    for original, twin in pairs:
        a = np.asarray(Image.open(original.path)).astype(int)
        b = np.asarray(Image.open(twin.path)).astype(int)
        lesion = original.load_mask("lesion")
        assert lesion is not None
        np.testing.assert_array_equal(twin.load_mask("removed_lesion"), lesion)
        np.testing.assert_array_equal(twin.load_mask("lung"), original.load_mask("lung"))
        dist = ndi.distance_transform_edt(~lesion)
        diff = np.abs(a - b)
        assert diff[dist > 5].max() <= 1, original.path
        assert (diff[dist > 12] > 0).sum() <= 2, original.path
        assert (a - b)[lesion].mean() > 20  # the finding is gone


def _model_records() -> dict[str, dict]:
    return {n: r for n, r in demo.demo_models().items() if r["kind"] != "segmentation"}


def test_demo_has_healthy_and_shortcut_models_of_every_cue_kind() -> None:
    kinds = {n: r["kind"] for n, r in demo.demo_models().items()}
    assert sum(k == "healthy" for k in kinds.values()) >= 3
    assert {k for k in kinds.values() if k.startswith("shortcut:")} == {
        "shortcut:marker",
        *(f"shortcut:{c}" for c in dw.CUE_KINDS),
    }
    assert set(kinds) == set(demo.MODEL_NAMES)
    for name in demo.MODEL_NAMES:
        assert demo.demo_model_kind(name) == kinds[name]
        assert demo.model_label(name) != name


def test_recorded_accuracies_match_a_recomputation(manifest: dict) -> None:
    """Every classifier loads; its recorded predictions reproduce on the first images of every split, and its
    recorded accuracy is what those predictions score."""
    for name, record in _model_records().items():
        loaded = load_model(demo.demo_model_path(name))
        assert list(loaded.class_names) == record["class_names"]
        names = record["class_names"]
        for split, acc in record["accuracy"].items():
            items = demo.demo_images(split)
            preds = [int(c) for c in record["committed_predictions"][split]]
            truth = [i.label if i.label is not None else record.get("garbage_class") for i in items]
            assert acc == pytest.approx(np.mean([names[p] == t for p, t in zip(preds, truth)]), abs=1e-4)
            assert record["accuracy_n"][split] == len(items)
            x = to_tensor([load_image(i.path) for i in items[:3]], loaded)
            with torch.inference_mode():
                now = loaded.module(x).argmax(1).tolist()
            assert now == preds[:3], (name, split)


def test_models_learned_what_their_kind_says(manifest: dict) -> None:
    for name, record in _model_records().items():
        gen = record["accuracy_generated"]
        if record["kind"] == "healthy":
            assert gen["test"] >= 0.95, name
            assert gen["shortcut_swapped"] >= 0.9, name  # a marker means nothing to it
        elif record["kind"].startswith("shortcut:"):
            cue = record["kind"].split(":")[1]
            own = "shortcut" if cue == "marker" else f"cue_{cue}"
            assert gen[own] >= 0.9, name
            assert gen[f"{own}_swapped"] <= 0.45, name  # follows the cue, not the finding
            assert gen["test"] <= 0.6, name  # no cue: near chance (1/3)


def test_expected_verdicts_follow_the_model_kinds() -> None:
    verdicts = demo.demo_expected_verdicts()
    assert set(verdicts.values()) <= set(demo.VERDICTS)
    for name in demo.HEALTHY_MODELS:
        assert verdicts[(name, "test")] == "SUITABLE"
        assert verdicts[(name, "ood")] == "CANNOT VERIFY"
    for name in demo.SHORTCUT_MODELS:
        for split in ("test", "shortcut", "cue_token", "cue_texture_swapped"):
            assert verdicts[(name, split)] == "UNSUITABLE"
    assert not any(split.endswith("_lesion_free") for _, split in verdicts)
    # 7 images per class on a cue split: too few for a SUITABLE at 20 per class
    strict = demo.demo_expected_verdicts(min_images_per_class=20)
    assert strict[("sound", "cue_token")] == "CANNOT VERIFY"
    assert strict[("sound", "test")] == "SUITABLE"
    assert strict[("shortcut_token", "cue_token")] == "UNSUITABLE"


def test_stacked_mask_frames_and_errors(tmp_path: Path) -> None:
    frames = np.zeros((3 * 8, 8), np.uint8)
    frames[8 + 2, 3] = 255
    Image.fromarray(frames).save(tmp_path / "m.png")
    mask = demo.MaskRef(tmp_path / "m.png", 1).load()
    assert mask.shape == (8, 8)
    assert mask.sum() == 1
    assert mask[2, 3]
    with pytest.raises(demo.DemoAssetsError, match="frames"):
        demo.MaskRef(tmp_path / "m.png", 3).load()
    with pytest.raises(demo.DemoAssetsError, match="make_demo"):
        demo.MaskRef(tmp_path / "missing.png").load()
    item = demo.demo_images("test")[0]
    with pytest.raises(ValueError, match="lung"):
        item.load_mask("liver")
    with pytest.raises(demo.DemoAssetsError, match="test"):
        demo.demo_twins("reference")
    assert demo.split_kind("cue_token_swapped") == "cue_swapped:token"
    assert demo.demo_splits_ordered()[0] == "test"


def test_reference_bundle_is_calibrated_on_the_healthy_demo_models(manifest: dict) -> None:
    record = manifest["references"]["sound"]["calibration"]
    doc = json.loads(demo.demo_reference_bundle().with_suffix(".json").read_text(encoding="utf-8"))
    calibration = doc["calibration"]
    assert calibration is not None
    assert set(calibration["healthy"]) == set(demo.demo_models("healthy")) == set(record["healthy"])
    assert set(demo.demo_models("shortcut")) | {"randomised"} == set(calibration["bad"])
    assert calibration["n_images"] == record["images"]["n"] == md.DemoConfig().n_calibration
    assert doc["reference_images"] > 0  # the E0 gate's thumbnails
