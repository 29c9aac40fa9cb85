"""Real test images as normalised tensors: skimage's astronaut and chelsea, pydicom-data's RG1 chest CR."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_tensor(pixels: np.ndarray, size: int, channels: int) -> torch.Tensor:
    """(H, W) or (H, W, 3) float in [0, 1] → (1, channels, size, size), ImageNet-normalised (grey: mean/std
    of the first channel)."""
    t = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    t = t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]
    t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if t.shape[1] == 1 and channels == 3:
        t = t.expand(1, 3, size, size)
    elif t.shape[1] == 3 and channels == 1:
        t = t.mean(dim=1, keepdim=True)
    mean = torch.tensor(IMAGENET_MEAN[:channels] if channels == 3 else (0.5,)).view(1, -1, 1, 1)
    std = torch.tensor(IMAGENET_STD[:channels] if channels == 3 else (0.25,)).view(1, -1, 1, 1)
    return ((t - mean) / std).contiguous()


@functools.cache
def _skimage(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)().astype(np.float32) / 255.0


def dicom_path(name: str = "RG1_UNCR.dcm") -> Path:
    spec = importlib.util.find_spec("data_store")
    assert spec is not None, "pydicom-data (data_store) is not installed"
    assert spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    assert path.is_file(), f"{path} missing"
    return path


@functools.cache
def _dicom(name: str) -> np.ndarray:
    import pydicom

    ds = pydicom.dcmread(dicom_path(name))
    px = ds.pixel_array.astype(np.float32)
    px = (px - px.min()) / max(float(px.max() - px.min()), 1.0)
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        px = 1.0 - px  # dense tissue bright
    return px


def astronaut(size: int = 160, channels: int = 3) -> torch.Tensor:
    return _to_tensor(_skimage("astronaut"), size, channels)


def chelsea(size: int = 160, channels: int = 3) -> torch.Tensor:
    return _to_tensor(_skimage("chelsea"), size, channels)


def chest(size: int = 160, channels: int = 3) -> torch.Tensor:
    return _to_tensor(_dicom("RG1_UNCR.dcm"), size, channels)
