"""Anatomical region of interest: hand-drawn phantoms, provided masks, a toy segmentation model, demo and real
chest images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from verification.anatomy import (
    LungParams,
    anatomy_roi,
    automatic_roi,
    body_region,
    find_mask_file,
    lung_region,
    roi_from_folder,
    roi_from_mask,
    roi_from_model,
)
from verification.errors import ShapeError
from verification.io.records import LoadedModel

SIZE = 128


def _ellipse(cy: float, cx: float, ry: float, rx: float, size: int = SIZE) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _chest(effusion: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Air 0.05, body ellipse 0.7, two dark lung ellipses 0.25 (noise sd 0.02). With ``effusion`` the lower
    35 % of the image-right lung is as bright as the body. Returns (image, body, lungs, effusion mask)."""
    rng = np.random.default_rng(3)
    body = _ellipse(70, 64, 62, 56)
    left, right = _ellipse(60, 40, 32, 16), _ellipse(60, 88, 32, 16)
    img = np.full((SIZE, SIZE), 0.05)
    img[body] = 0.7
    img[left | right] = 0.25
    fluid = right & (np.mgrid[0:SIZE, 0:SIZE][0] > 60 + 32 - 0.35 * 64)
    if effusion:
        img[fluid] = 0.7
    img += rng.normal(0, 0.02, img.shape)
    return np.clip(img, 0, 1).astype(np.float32), body, left | right, fluid


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_phantom_lungs_are_found_and_the_corners_stay_outside() -> None:
    img, body, lungs, _ = _chest()
    rec = automatic_roi(img)
    assert rec.source == "automatic_lungs"
    assert rec.ok
    assert rec.mask is not None
    assert rec.mask.shape == img.shape
    assert rec.mask[lungs].all()  # every lung pixel inside
    assert not rec.mask[~body].any()  # nothing of the air
    # the region is the lung hulls shifted 0.1 x 64 = 6 px down, plus a 0.015 x 128 = 2 px margin: lungs
    # 2 x pi x 32 x 16 = 3217 px; the shift adds ~2 x 32 x 6 = 384 px, the margin ~2 x 2 x 159 px (perimeter
    # of each ellipse ~159 px) = 636 px, so the lungs are ~3217 / 4237 = 0.76 of the region.
    assert 0.70 < lungs.sum() / rec.mask.sum() < 0.82
    # the aerated fields are the dark ellipses themselves (smoothing and opening round them slightly)
    assert rec.fields is not None
    assert not (rec.fields & ~rec.mask).any()
    assert _iou(rec.fields, lungs) > 0.9


def test_a_bright_effusion_at_a_lung_base_stays_inside_the_region() -> None:
    img, _, lungs, fluid = _chest(effusion=True)
    bare = {"base_extension": 0.0, "margin": 0.0}
    dark_only = automatic_roi(img, LungParams(mirror="off", match_base=False, **bare))
    assert dark_only.mask is not None
    assert dark_only.mask[fluid].mean() < 0.2  # a darkness threshold misses it
    # each repair alone restores the base of this symmetric pair (all but the soft edge of the fluid)
    for params in (
        LungParams(mirror="off", match_base=True, **bare),
        LungParams(mirror="base", match_base=False, **bare),
    ):
        repaired = automatic_roi(img, params)
        assert repaired.mask is not None
        assert repaired.mask[fluid].mean() > 0.97, params
    rec = automatic_roi(img)
    assert rec.source == "automatic_lungs"
    assert rec.mask is not None
    assert rec.mask[fluid].all()
    assert rec.mask[lungs].all()


def test_channels_first_last_and_uint8_give_the_same_region() -> None:
    img, *_ = _chest()
    ref = automatic_roi(img).mask
    u8 = np.round(img * 255).astype(np.uint8)
    for variant in (img[None], np.stack([img] * 3), np.stack([img] * 3, axis=-1), u8, torch.from_numpy(img)):
        assert np.array_equal(automatic_roi(variant).mask, ref)


def test_body_fallback_when_there_are_no_lungs() -> None:
    body = _ellipse(64, 64, 50, 40)
    img = np.where(body, 0.7, 0.05).astype(np.float32)
    img += np.random.default_rng(0).normal(0, 0.02, img.shape).astype(np.float32)
    assert not lung_region(img).ok
    rec = automatic_roi(img)
    assert rec.source == "automatic_body"
    assert rec.mask is not None
    assert "lung" in rec.reason
    assert _iou(rec.mask, body) > 0.95
    failed = automatic_roi(img, fallback_body=False)
    assert failed.source == "failed"
    assert failed.mask is None
    assert not failed.ok
    assert body_region(img).source == "automatic_body"


@pytest.mark.parametrize(
    "img",
    [
        np.full((64, 64), 0.4, np.float32),  # flat
        np.full((64, 64), 0.8, np.float32)
        + np.random.default_rng(0).normal(0, 0.01, (64, 64)).astype(np.float32),
    ],
    ids=["flat", "body-fills-image"],
)
def test_automatic_method_fails_openly_never_a_whole_image_mask(img: np.ndarray) -> None:
    rec = automatic_roi(img)
    assert rec.source == "failed"
    assert rec.mask is None
    assert rec.reason
    assert rec.area_fraction == 0.0


def test_bad_inputs_raise_shape_errors() -> None:
    with pytest.raises(ShapeError):
        automatic_roi(np.zeros((4, 64, 64), np.float32))
    with pytest.raises(ShapeError, match="NaN"):
        automatic_roi(np.full((32, 32), np.nan, np.float32))
    with pytest.raises(ShapeError):
        automatic_roi(np.zeros((4, 4), np.float32))


def test_provided_masks_array_and_folder(tmp_path: Path) -> None:
    mask = np.zeros((32, 32), bool)
    mask[8:24, 4:20] = True
    rec = roi_from_mask(mask.astype(np.uint8) * 255, (64, 64))
    assert rec.source == "provided"
    assert rec.mask is not None
    assert np.array_equal(rec.mask, np.kron(mask, np.ones((2, 2), bool)))  # nearest neighbour x2
    with pytest.raises(ShapeError, match="aspect"):
        roi_from_mask(mask, (64, 128))
    assert roi_from_mask(np.zeros((8, 8)), (8, 8)).source == "failed"

    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "007_nodule_lung.png")
    assert find_mask_file(tmp_path, "007_nodule.png") == tmp_path / "007_nodule_lung.png"
    rec = roi_from_folder(tmp_path, "007_nodule.png", (32, 32))
    assert rec.source == "provided"
    assert np.array_equal(rec.mask, mask)
    assert "007_nodule_lung.png" in rec.method
    missing = roi_from_folder(tmp_path, "008_normal.png", (32, 32))
    assert missing.source == "failed"
    assert "008_normal_lung.png" in missing.reason
    # a mask folder of its own may name masks exactly like the images; the image's own folder may not
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / "009_normal.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "009_normal.png")
    assert (
        find_mask_file(tmp_path / "masks", str(tmp_path / "009_normal.png"))
        == tmp_path / "masks" / "009_normal.png"
    )
    assert find_mask_file(tmp_path, str(tmp_path / "009_normal.png")) is None
    via = anatomy_roi(np.zeros((32, 32), np.float32), mask_folder=tmp_path, image_name="007_nodule.png")
    assert via.source == "provided"


def _segmenter(module: nn.Module, outputs: tuple[str, ...], name: str) -> LoadedModel:
    """A toy segmentation model (1 channel in, 32×32, mean 0.5, std 0.25) with the output channels given."""
    return LoadedModel(
        module=module.eval(),
        in_channels=1,
        input_size=(32, 32),
        class_names=outputs,
        mean=(0.5,),
        std=(0.25,),
        source_format="module",
        content_hash=name,
        task="segmentation",
        name=name,
    )


class _HalfSegmenter(nn.Module):
    """Logits (1, 2, h, w): channel 1 ('lungs') wins on the left half of the input, channel 0 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        left = torch.zeros(n, 1, h, w)
        left[..., : w // 2] = 1.0
        return torch.cat([3.0 * (1 - left) - 1.5, 3.0 * left - 1.5], dim=1)


def test_segmentation_model_channel_is_the_region() -> None:
    model = _segmenter(_HalfSegmenter(), ("background", "lungs"), "toy")
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    rec = roi_from_model(img, model, "lungs")
    expected = np.zeros((64, 64), bool)
    expected[:, :32] = True
    assert rec.source == "model"
    assert np.array_equal(rec.mask, expected)
    assert np.array_equal(anatomy_roi(img, model=model, channel=1).mask, expected)
    with pytest.raises(ShapeError, match="no output named"):
        roi_from_model(img, model, "heart")


class _TopSegmenter(nn.Module):
    """One output channel: logit +2 on the top half, -2 below (sigmoid 0.88 / 0.12)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        out = torch.full((n, 1, h, w), -2.0)
        out[:, :, : h // 2] = 2.0
        return out


def test_single_channel_segmentation_uses_the_sigmoid() -> None:
    model = _segmenter(_TopSegmenter(), ("lungs",), "toy1")
    img = np.zeros((64, 64), np.float32)
    rec = roi_from_model(img, model, 0)
    assert rec.mask is not None
    assert rec.mask[:31].all()
    assert not rec.mask[33:].any()
    assert roi_from_model(img, model, 0, threshold=0.9).source == "failed"  # 0.88 < 0.9 everywhere


def test_first_source_given_wins() -> None:
    img, *_ = _chest()
    mask = np.zeros(img.shape, bool)
    mask[:10, :10] = True
    assert anatomy_roi(img, mask=mask).source == "provided"
    assert anatomy_roi(img).source == "automatic_lungs"


def test_demo_images_lung_iou_and_lesion_coverage() -> None:
    """Six demo images regenerated with their true masks. bench/anatomy.py on 120 (test + reference, 80 with a
    lesion): IoU mean 0.57-0.64, minimum 0.51; nodule coverage 100 %, effusion mean 94 %, minimum 80 %."""
    from assets.make_demo import make_case

    for index in range(6):
        case = make_case(1234, "test", index)
        rec = automatic_roi(case.image)
        assert rec.source == "automatic_lungs"
        assert rec.mask is not None
        assert _iou(rec.mask, case.lung_mask) > 0.45
        assert rec.mask[case.lung_mask].mean() > 0.9  # the region holds the lungs ...
        if case.lesion_mask.any():
            assert rec.mask[case.lesion_mask].mean() > 0.75  # ... and the finding


def test_real_chest_radiograph_rg1() -> None:
    """pydicom-data's RG1_UNCR.dcm, a real PA chest CR (1955 x 1841): lung fields found, region inside the
    image away from its borders, about two thirds of it (measured 0.64 with the defaults)."""
    from assets.demo_world import pydicom_data_path
    from verification.io.images import load_image

    path = pydicom_data_path("RG1_UNCR.dcm")
    if path is None:
        pytest.skip("pydicom-data is not installed")
    img = load_image(path)
    rec = automatic_roi(img)
    assert rec.source == "automatic_lungs"
    assert rec.mask is not None
    assert 0.4 < rec.area_fraction < 0.8
    _h, w = rec.mask.shape
    assert not rec.mask[:, : w // 40].any()
    assert not rec.mask[:, -w // 40 :].any()
    # both halves hold lung
    assert rec.mask[:, : w // 2].mean() > 0.2
    assert rec.mask[:, w // 2 :].mean() > 0.2
