"""Fixtures for the command-line tests: a small saved model, a folder of images of mixed sizes, a labelled
folder (class subfolders)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .helpers import Env

CLASSES = ("normal", "nodule", "effusion")


def _image(rng: np.random.Generator, h: int, w: int, *, colour: bool = False) -> Image.Image:
    # A bright disc on a gradient: enough structure for a CAM to be non-constant.
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, 0.2 * min(h, w)
    img = 0.3 * xx / w + 0.6 * ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) + 0.1 * rng.random((h, w))
    arr = np.clip(img * 255, 0, 255).astype(np.uint8)
    if colour:
        arr = np.stack([arr, arr[::-1], arr[:, ::-1]], axis=2)
    return Image.fromarray(arr)


@pytest.fixture(scope="session")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    from verification.io.architectures import build_architecture
    from verification.io.models import save_model

    root = tmp_path_factory.mktemp("cli_env")
    torch.manual_seed(0)
    module = build_architecture("resnet18", num_classes=len(CLASSES), in_channels=1)
    model = save_model(
        module,
        root / "model.safetensors",
        architecture="resnet18",
        class_names=CLASSES,
        in_channels=1,
        input_size=(64, 64),
        mean=[0.5],
        std=[0.25],
    )
    rng = np.random.default_rng(0)
    images = root / "images"
    images.mkdir()
    sizes = [(64, 64), (80, 72), (100, 60), (48, 90), (64, 64), (120, 120), (70, 50)]
    for i, (h, w) in enumerate(sizes):
        _image(rng, h, w, colour=i == 3).save(images / f"img{i:02d}.png")
    labelled = root / "labelled"
    for name in CLASSES:
        (labelled / name).mkdir(parents=True)
        for i in range(3):
            _image(rng, 64 + 8 * i, 64, colour=False).save(labelled / name / f"{name}{i}.png")
    return Env(model=model, images=images, labelled=labelled, class_names=CLASSES)


@pytest.fixture(scope="session")
def bundle(env: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reference bundle built by ``reference build`` on the labelled folder (every image, so that each class
    has a reference whatever the untrained model predicts)."""
    from .helpers import run_cli

    out = tmp_path_factory.mktemp("bundle") / "ref"
    res = run_cli(
        "reference", "build", env.model, env.labelled, "-o", out, "--all-images", "--batch-size", "4"
    )
    assert res.returncode == 0, res.stderr
    return out
