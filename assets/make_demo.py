"""Build the demo world: images, trained models, checkpoints, samples, reference bundles, attention numbers.

    python -m assets.make_demo                      # every stage, writes assets/demo/
    python -m assets.make_demo --stage data         # committed image splits + manifest splits
    python -m assets.make_demo --stage train        # sound (+ checkpoints), shortcut, garbage, segmentation
    python -m assets.make_demo --stage samples      # PNG/DICOM samples, the sound model in every format
    python -m assets.make_demo --stage references   # the sound model's reference bundle
    python -m assets.make_demo --stage attention    # Grad-CAM vs lesion / marker, sound and shortcut
    python -m assets.make_demo --stage evaluate     # every classifier on every split: accuracy, kind, verdict

    python -m assets.make_demo --stage train --models healthy_seed,shortcut_token   # a subset of the models

Everything is seeded: image i of split s comes from ``SeedSequence([seed, SPLIT_IDS[s], i])``, training
shuffles from ``torch.Generator().manual_seed(seed + k)``. Training data is regenerated, never committed. The
manifest (``manifest.json``) records how each model was made and what it measured.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import multiprocessing
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from assets import demo_world as dw

log = logging.getLogger("assets.make_demo")

DEMO_DIR = Path(__file__).resolve().parent / "demo"
SCHEMA_VERSION = 1
MEAN, STD = (0.5,), (0.25,)
GARBAGE = "garbage"
SEG_CLASSES: tuple[str, ...] = ("background", "nodule", "effusion")

# Every split draws from its own seed stream; never reuse an id.
SPLIT_IDS: dict[str, int] = {
    "train": 1,
    "test": 2,
    "reference": 3,
    "shortcut_train": 4,
    "shortcut": 5,
    "shortcut_swapped": 6,
    "ood_train": 7,
    "ood": 8,
    **{f"shifted_{k}": 10 + i for i, k in enumerate(dw.SHIFT_KINDS)},
    # per cue kind: training data (cue = label), test with the label's cue, test with another class's cue
    **{f"cue_{k}_train": 20 + 3 * i for i, k in enumerate(dw.CUE_KINDS)},
    **{f"cue_{k}": 21 + 3 * i for i, k in enumerate(dw.CUE_KINDS)},
    **{f"cue_{k}_swapped": 22 + 3 * i for i, k in enumerate(dw.CUE_KINDS)},
    # further training samples for the healthy models (same recipe as "train")
    "train_data2": 30,
    "train_data3": 31,
    # fresh images for calibrating the verdict (clean and each cue, label's own), never committed
    "calibration": 40,
}
CALIBRATION_KINDS: tuple[str, ...] = ("clean", "marker", *dw.CUE_KINDS)
LESION_FREE = "_lesion_free"  # suffix of a twin split: the same cases regenerated without their lesion
# Healthy models: the sound recipe with another seed (offset from the sound model's) and/or data sample.
HEALTHY_VARIANTS: dict[str, tuple[int, str]] = {
    "healthy_seed": (10, "train"),
    "healthy_data": (0, "train_data2"),
    "healthy_seed_data": (20, "train_data3"),
}
CUE_MODELS: dict[str, str] = {f"shortcut_{k}": k for k in dw.CUE_KINDS}
ORIGINAL_MODELS: tuple[str, ...] = ("sound", "shortcut", "garbage", "segmentation")
MODELS: tuple[str, ...] = (*ORIGINAL_MODELS, *HEALTHY_VARIANTS, *CUE_MODELS)


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and schedules; the defaults build the committed demo, the tests pass tiny ones."""

    seed: int = 1234
    size: int = dw.SIZE
    architecture: str = "mobilenet_v3_small"
    arch_kwargs: dict[str, Any] = field(default_factory=lambda: {"width_mult": 0.5, "reduced_tail": True})
    n_train: int = 1500
    n_test: int = 450  # measured accuracy; the first n_commit_test are committed
    n_commit_test: int = 60
    n_reference: int = 60
    n_shortcut_train: int = 900
    n_shortcut_test: int = 150  # with the true marker and with a swapped one; 30 of each committed
    n_commit_shortcut: int = 30
    shortcut_lesion_strength: float = 0.2
    n_shifted: int = 15  # per kind, committed
    n_ood_train: int = 450
    n_garbage_id: int = (
        900  # in-distribution images (a subset of the sound model's) for the garbage fine-tune
    )
    n_ood_test: int = 300  # held-out sources; the first n_commit_ood are committed
    n_commit_ood: int = 40
    n_cue_train: int = 900  # per cue kind, cue = label on every image, lesions at cue_lesion_strength
    cue_lesion_strength: float = 0.1
    n_cue_test: int = 150  # per cue kind, with the label's cue and with a swapped one; n_commit_cue committed
    n_commit_cue: int = 21  # 7 per class: keeps assets/ under 30 MB (du)
    n_calibration: int = 120  # generated: 24 each of clean, marker and every cue kind
    # committed lesion-free twins of these splits' abnormal images
    twin_splits: tuple[str, ...] = ("test",)
    epochs_sound: int = 10
    checkpoints_per_epoch: int = 1
    epochs_shortcut: int = 10
    epochs_cue: int = 10
    epochs_garbage: int = 2
    epochs_segmentation: int = 3
    seg_base: int = 8
    seg_crop: int = 112
    batch_size: int = 24
    lr: float = 3e-3
    threads: int = 1
    workers: int = 2


# ----------------------------------------------------------------------------------------------------
# Data


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, SPLIT_IDS[split], index]))


def make_case(seed: int, split: str, index: int, cfg_strength: float = 1.0) -> dw.Case:
    """Image ``index`` of ``split``: a pure function of (seed, split, index). ``<split>_lesion_free`` is the
    same case with its lesion's density at 0 (same draws: same patient, film, cue and noise)."""
    lesion_free = split.endswith(LESION_FREE)
    if lesion_free:
        split = split.removesuffix(LESION_FREE)
    rng = case_rng(seed, split, index)
    label = index % len(dw.CLASSES)
    strength = 0.0 if lesion_free else 1.0
    if split in ("train", "test", "reference", "train_data2", "train_data3"):
        return dw.render_case(rng, label, lesion_strength=strength)
    if split.startswith("shortcut"):
        corner = dw.CORNERS[int(rng.integers(len(dw.CORNERS)))]
        if split == "shortcut_train":
            return dw.render_case(
                rng, label, marker=label, marker_corner=corner, lesion_strength=cfg_strength
            )
        if split == "shortcut":
            return dw.render_case(rng, label, marker=label, marker_corner=corner, lesion_strength=strength)
        if split == "shortcut_swapped":
            other = (label + 1 + int(rng.integers(len(dw.CLASSES) - 1))) % len(dw.CLASSES)
            return dw.render_case(rng, label, marker=other, marker_corner=corner, lesion_strength=strength)
    if split == "calibration":  # triplets (one per class) cycle through clean, marker and the cue kinds
        cal = CALIBRATION_KINDS[(index // len(dw.CLASSES)) % len(CALIBRATION_KINDS)]
        if cal == "marker":
            corner = dw.CORNERS[int(rng.integers(len(dw.CORNERS)))]
            return dw.render_case(rng, label, marker=label, marker_corner=corner)
        case = dw.render_case(rng, label)
        return case if cal == "clean" else dw.apply_cue(case, cal, label, rng)
    if split.startswith("cue_"):
        kind, _, role = split.removeprefix("cue_").partition("_")
        if role == "train":
            strength *= cfg_strength
        case = dw.render_case(rng, label, lesion_strength=strength)
        cls = label
        if role == "swapped":
            cls = (label + 1 + int(rng.integers(len(dw.CLASSES) - 1))) % len(dw.CLASSES)
        return dw.apply_cue(case, kind, cls, rng)
    if split.startswith("shifted_"):
        case = dw.render_case(rng, label, lesion_strength=strength)
        return dw.shift_case(case, split.removeprefix("shifted_"), rng)
    if split in ("ood", "ood_train"):
        return dw.render_ood(rng, held_out=split == "ood")
    raise ValueError(f"unknown split {split!r}")


def _make_case_args(args: tuple[int, str, int, float]) -> dw.Case:
    return make_case(*args)


def generate(cfg: DemoConfig, split: str, n: int, strength: float = 1.0) -> list[dw.Case]:
    """``n`` cases of ``split``, in index order, using ``cfg.workers`` processes."""
    jobs = [(cfg.seed, split, i, strength) for i in range(n)]
    if cfg.workers <= 1 or n < 16:
        return [_make_case_args(j) for j in jobs]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(cfg.workers) as pool:
        return pool.map(_make_case_args, jobs, chunksize=16)


def as_tensors(cases: Sequence[dw.Case]) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 1, H, W) uint8 images and (N,) int64 labels."""
    x = torch.from_numpy(np.stack([c.image for c in cases]))[:, None]
    y = torch.tensor([c.label for c in cases], dtype=torch.int64)
    return x, y


def normalise(x_u8: torch.Tensor) -> torch.Tensor:
    """uint8 → model input: pixels / 255, then (x - mean) / std, as verification.io.images does."""
    return (x_u8.float() / 255.0 - MEAN[0]) / STD[0]


# ----------------------------------------------------------------------------------------------------
# Models


def build_classifier(cfg: DemoConfig, num_classes: int) -> nn.Module:
    from verification.io.models import build_architecture

    model = build_architecture(cfg.architecture, num_classes=num_classes, in_channels=1, **cfg.arch_kwargs)
    # torchvision's MobileNetV3 uses BatchNorm momentum 0.01: over a few hundred steps the running statistics
    # stay near their initial values and eval-mode predictions collapse to one class. 0.1 tracks them.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.1
    return model


def save_classifier(
    model: nn.Module,
    path: Path,
    cfg: DemoConfig,
    class_names: Sequence[str],
    *,
    half: bool,
    garbage: bool = False,
) -> Path:
    from verification.io.models import save_model

    return save_model(
        model,
        path,
        architecture=cfg.architecture,
        arch_kwargs=cfg.arch_kwargs,
        class_names=list(class_names),
        in_channels=1,
        input_size=(cfg.size, cfg.size),
        mean=MEAN,
        std=STD,
        task="classification",
        garbage_class=GARBAGE if garbage else None,
        half=half,
    )


def load_saved(path: Path) -> nn.Module:
    """The module as a user gets it: through verification.io.models.load_model (fp16 upcast included)."""
    from verification.io.models import load_model

    return load_model(path).module


@torch.inference_mode()
def predict(model: nn.Module, x_u8: torch.Tensor, batch: int = 64) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = [model(normalise(x_u8[i : i + batch])) for i in range(0, len(x_u8), batch)]
    model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, x_u8: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x_u8).argmax(1) == y).float().mean())


def train_classifier(
    model: nn.Module,
    x_u8: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int,
    cfg: DemoConfig,
    seed: int,
    checkpoints_per_epoch: int = 0,
    on_checkpoint: Callable[[nn.Module, float, int], None] | None = None,
    class_weight: torch.Tensor | None = None,
    lr: float | None = None,
) -> list[float]:
    """AdamW + one-cycle schedule; ``on_checkpoint(model, epoch, step)`` every 1/checkpoints_per_epoch epoch.
    Returns the mean training loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = len(x_u8)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=lr or cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr or cfg.lr, total_steps=epochs * steps_per_epoch, pct_start=0.2
    )
    marks = set()
    if checkpoints_per_epoch:
        marks = {
            round(steps_per_epoch * k / checkpoints_per_epoch) for k in range(1, checkpoints_per_epoch + 1)
        }
    losses: list[float] = []
    step = 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = normalise(x_u8[idx])
            if torch.rand((), generator=gen) < 0.5:  # small shifts so position alone is not memorised
                dy, dx = (int(v) for v in torch.randint(-8, 9, (2,), generator=gen))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb), y[idx], weight=class_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            step += 1
            if on_checkpoint is not None and (b + 1) in marks:
                model.eval()
                on_checkpoint(model, epoch + (b + 1) / steps_per_epoch, step)
                model.train()
        losses.append(total / n)
        log.info("epoch %d/%d loss %.4f", epoch + 1, epochs, losses[-1])
    recalibrate_batchnorm(model, x_u8, cfg.batch_size)
    model.eval()
    return losses


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, x_u8: torch.Tensor, batch: int, max_images: int = 600) -> None:
    """Re-estimate BatchNorm running statistics of the final weights (cumulative average over up to
    ``max_images`` training images): with a short one-cycle run the exponential averages lag behind the
    weights and eval-mode predictions can differ from training-mode ones."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    # a seeded random subset, so mixed training sets (garbage: chest + OOD) are represented as trained
    pick = torch.randperm(len(x_u8), generator=torch.Generator().manual_seed(0))[:max_images]
    for i in range(0, len(pick), batch):
        model(normalise(x_u8[pick[i : i + batch]]))
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.eval()


def _counts(y: torch.Tensor, names: Sequence[str]) -> dict[str, int]:
    return {name: int((y == i).sum()) for i, name in enumerate(names)}


# ----------------------------------------------------------------------------------------------------
# Manifest


def read_manifest(out: Path) -> dict[str, Any]:
    path = out / "manifest.json"
    if path.is_file():
        return dict(json.loads(path.read_text(encoding="utf-8")))
    return {"schema_version": SCHEMA_VERSION}


def _clean(value: Any) -> Any:
    """NaN (an undefined number, e.g. no image of a kind) → null, so the manifest is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    manifest["schema_version"] = SCHEMA_VERSION
    manifest = _clean(manifest)
    (out / "manifest.json").write_text(_dumps(manifest) + "\n", encoding="utf-8")


def _dumps(manifest: dict[str, Any]) -> str:
    """Indented JSON, except that each split entry and each model's per-image predictions take one line (the
    manifest lists ~600 images: one entry per line keeps it readable and small)."""
    compact: dict[str, str] = {}

    def mark(value: Any) -> str:
        key = f"@@compact{len(compact)}@@"
        compact[key] = json.dumps(value, allow_nan=False, ensure_ascii=False)
        return key

    doc = dict(manifest)
    if isinstance(doc.get("splits"), dict):
        doc["splits"] = {split: [mark(e) for e in entries] for split, entries in doc["splits"].items()}
    if isinstance(doc.get("models"), dict):
        doc["models"] = {
            name: {k: mark(v) if k == "committed_predictions" else v for k, v in entry.items()}
            for name, entry in doc["models"].items()
        }
    text = json.dumps(doc, indent=1, allow_nan=False)
    for key, value in compact.items():
        text = text.replace(f'"{key}"', value, 1)
    return text


def _rel(path: Path, out: Path) -> str:
    return path.relative_to(out).as_posix()


def _save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, optimize=True)


# ----------------------------------------------------------------------------------------------------
# Stage: data


def committed_splits(cfg: DemoConfig) -> dict[str, int]:
    splits = {
        "test": cfg.n_commit_test,
        "reference": cfg.n_reference,
        "shortcut": cfg.n_commit_shortcut,
        "shortcut_swapped": cfg.n_commit_shortcut,
        "ood": cfg.n_commit_ood,
    }
    splits.update({f"shifted_{k}": cfg.n_shifted for k in dw.SHIFT_KINDS})
    for kind in dw.CUE_KINDS:
        splits.update({f"cue_{kind}": cfg.n_commit_cue, f"cue_{kind}_swapped": cfg.n_commit_cue})
    return splits


_META_KEYS: tuple[str, ...] = (
    "marker",
    "marker_corner",
    "cue",
    "cue_class",
    "cue_info",
    "shift",
    "ood_kind",
    "source",
    "lungs",
)


STACKED_MASKS: dict[str, str] = {"lung_mask": "lungs", "cue_mask": "cue"}
"""Mask kinds stored as one stacked PNG per split (frame i, rows i*H..(i+1)*H, belongs to image i), so the
hundreds of small masks do not each take a file-system block; lesion and marker masks stay one PNG per
image."""


def _split_items(cases: Sequence[dw.Case], split: str, out: Path) -> list[dict[str, Any]]:
    """Save a split's images, per-image lesion / marker masks, stacked lung / cue masks, and their manifest
    entries. A texture cue covers the lungs: its cue mask is the lung mask (same file and frame)."""
    items: list[dict[str, Any]] = []
    stacks: dict[str, list[np.ndarray]] = {key: [] for key in STACKED_MASKS}
    for i, case in enumerate(cases):
        stem = f"{i:03d}_{case.label_name}"
        img_path = out / "images" / split / f"{stem}.png"
        _save_png(case.image, img_path)
        item: dict[str, Any] = {
            "path": _rel(img_path, out),
            "label": case.label_name if case.label >= 0 else None,
            "lesion_mask": None,
            "marker_mask": None,
        }
        for key, mask in (("lesion_mask", case.lesion_mask), ("marker_mask", case.marker_mask)):
            if mask.any():
                mpath = out / "masks" / split / f"{stem}_{key.split('_')[0]}.png"
                _save_png(mask.astype(np.uint8) * 255, mpath)
                item[key] = _rel(mpath, out)
        empty = np.zeros_like(case.image, dtype=bool)
        cue = case.cue_mask if case.cue_mask is not None else empty
        for key, mask in (("lung_mask", case.lung_mask), ("cue_mask", cue)):
            stacks[key].append(mask)
            item[key], item[f"{key}_index"] = None, None
            if mask.any():
                same_as_lungs = key == "cue_mask" and np.array_equal(mask, case.lung_mask)
                source = "lung_mask" if same_as_lungs else key
                item[key] = _rel(out / "masks" / split / f"{STACKED_MASKS[source]}.png", out)
                item[f"{key}_index"] = i
        for key in _META_KEYS:
            if key in case.meta:
                item[key] = case.meta[key]
        items.append(item)
    for key, frames in stacks.items():
        if any(item[key] and item[key].endswith(f"/{STACKED_MASKS[key]}.png") for item in items):
            _save_png(
                np.concatenate(frames).astype(np.uint8) * 255,
                out / "masks" / split / f"{STACKED_MASKS[key]}.png",
            )
    return items


def read_mask(out: Path, item: dict[str, Any], key: str) -> np.ndarray | None:
    """The boolean mask ``key`` ("lesion_mask", "lung_mask", ...) of a manifest entry, or None; a stacked file
    is cut to the entry's frame."""
    rel = item.get(key)
    if rel is None:
        return None
    mask = np.asarray(Image.open(out / rel)) > 127
    index = item.get(f"{key}_index")
    if index is None:
        return mask
    h = mask.shape[1]  # square images: a frame is as tall as the stack is wide
    return mask[index * h : (index + 1) * h]


def _twin_items(
    cfg: DemoConfig, split: str, originals: list[dict[str, Any]], out: Path
) -> list[dict[str, Any]]:
    """Lesion-free twins of the abnormal images of a committed split: the same case regenerated with the
    lesion's density at 0. Label "normal" (nothing left to find); the original's lung / cue / marker masks
    apply unchanged (same entries), ``removed_lesion_mask`` is the original's lesion mask."""
    items = []
    for i, orig in enumerate(originals):
        if orig["lesion_mask"] is None:
            continue
        case = make_case(cfg.seed, split + LESION_FREE, i)
        img_path = out / "images" / (split + LESION_FREE) / f"{i:03d}_{orig['label']}{LESION_FREE}.png"
        _save_png(case.image, img_path)
        masks = {
            k: orig[k] for k in ("marker_mask", "lung_mask", "lung_mask_index", "cue_mask", "cue_mask_index")
        }
        items.append(
            {
                "path": _rel(img_path, out),
                "label": dw.CLASSES[0],
                "lesion_mask": None,
                **masks,
                "twin_of": orig["path"],
                "removed_label": orig["label"],
                "removed_lesion_mask": orig["lesion_mask"],
                **{k: orig[k] for k in _META_KEYS if k in orig},
            }
        )
    return items


def stage_data(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Write the committed image splits (PNG 8-bit, masks as 0/255 PNG) and their manifest entries; every
    chest image has a lung mask, every abnormal one a lesion mask; ``<split>_lesion_free`` twins for
    ``cfg.twin_splits``."""
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, n in committed_splits(cfg).items():
        splits[split] = _split_items(generate(cfg, split, n), split, out)
        log.info("split %s: %d images", split, n)
    for split in cfg.twin_splits:
        if split in splits:
            splits[split + LESION_FREE] = _twin_items(cfg, split, splits[split], out)
            log.info("split %s: %d twins", split + LESION_FREE, len(splits[split + LESION_FREE]))
    manifest = read_manifest(out)  # read late: a training process may have stored a model meanwhile
    manifest["generator"] = {
        "module": "assets.demo_world",
        "seed": cfg.seed,
        "image_size": [cfg.size, cfg.size],
        "classes": list(dw.CLASSES),
        "markers": {c: m[0] for c, m in zip(dw.CLASSES, dw.MARKERS)},
        "marker_corner": "random per image (top/bottom, left/right)",
        "cues": {
            "token": {
                "what": "bright disc (radius 4.5-6 px) >= 3 px outside the lungs in a class-coded zone",
                "zones_yx_fractions": {c: list(z) for c, z in zip(dw.CLASSES, dw.TOKEN_ZONES)},
            },
            "acquisition": {
                "what": "'which hospital': exposure gamma, added noise (sigma, grain) per class, whole film",
                "hospitals": {c: dict(h) for c, h in zip(dw.CLASSES, dw.HOSPITALS)},
            },
            "texture": {
                "what": "faint grating inside the lungs, orientation and period per class, random phase",
                "angles_deg": dict(zip(dw.CLASSES, dw.TEXTURE_ANGLES)),
                "periods_px": dict(zip(dw.CLASSES, dw.TEXTURE_PERIODS)),
                "amplitude": dw.TEXTURE_AMPLITUDE,
            },
            "swapped": "cue of another class, drawn uniformly from the other two",
        },
        "twins": f"<split>{LESION_FREE}: the same case regenerated with lesion density 0; differs from the "
        "original only inside the lesion mask's edge blur (<= 5 px)",
        "lung_masks": "torchxrayvision semantic_masks_v7labs_lungs.zip"
        if dw.lung_zip_path() is not None
        else "procedural",
        "ood_sources": {
            "train": {"kinds": list(dw.OOD_KINDS_TRAIN), "natural": list(dw.OOD_NATURAL_TRAIN)},
            "test": {"kinds": list(dw.OOD_KINDS_TEST), "natural": list(dw.OOD_NATURAL_TEST)},
        },
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("threads", "workers")},
        "command": "python -m assets.make_demo",
    }
    manifest["splits"] = splits
    write_manifest(out, manifest)
    return manifest


# ----------------------------------------------------------------------------------------------------
# Stage: train


@dataclass
class _Data:
    x: torch.Tensor
    y: torch.Tensor
    cases: list[dw.Case]


def _data(cfg: DemoConfig, split: str, n: int, strength: float = 1.0) -> _Data:
    t0 = time.perf_counter()
    cases = generate(cfg, split, n, strength)
    x, y = as_tensors(cases)
    log.info("generated %s: %d images in %.1fs", split, n, time.perf_counter() - t0)
    return _Data(x, y, cases)


def _model_entry(
    path: Path, out: Path, cfg: DemoConfig, seed: int, data: dict[str, Any], epochs: int, **extra: Any
) -> dict[str, Any]:
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    return {
        "file": _rel(path, out),
        "sidecar": _rel(path.with_suffix(".json"), out),
        "architecture": sidecar["architecture"],
        "arch_kwargs": sidecar["arch_kwargs"],
        "class_names": sidecar["class_names"],
        "seed": seed,
        "data": data,
        "epochs": epochs,
        **extra,
    }


def _fit(
    cfg: DemoConfig, out: Path, name: str, train: _Data, seed: int, epochs: int, *, half: bool
) -> tuple[Path, nn.Module, list[float], float]:
    """A classifier of the demo classes built from ``seed``, trained on ``train`` and saved as
    ``models/<name>.safetensors``; returns its path, the module loaded back, the losses and the training
    seconds."""
    torch.manual_seed(seed)
    model = build_classifier(cfg, len(dw.CLASSES))
    t0 = time.perf_counter()
    losses = train_classifier(model, train.x, train.y, epochs=epochs, cfg=cfg, seed=seed)
    seconds = time.perf_counter() - t0
    path = save_classifier(model, out / "models" / f"{name}.safetensors", cfg, dw.CLASSES, half=half)
    return path, load_saved(path), losses, seconds


def _test_accuracies(model: nn.Module, test: _Data, commit_test: _Data) -> dict[str, Any]:
    """A healthy-recipe model's accuracy on the test split, and on its committed images."""
    return {
        "test_accuracy": accuracy(model, test.x, test.y),
        "test_n": len(test.y),
        "committed_test_accuracy": accuracy(model, commit_test.x, commit_test.y),
        "committed_test_split": "test",
    }


def _shortcut_accuracies(
    model: nn.Module, cue: str, with_cue: _Data, swapped: _Data, test: _Data, k: int
) -> dict[str, Any]:
    """A shortcut model's accuracy with its ``cue`` (``marker``, ``cue``) on, swapped to another class's and
    absent, against chance; on the first ``k`` images too (those committed)."""
    return {
        f"accuracy_with_{cue}": accuracy(model, with_cue.x, with_cue.y),
        f"accuracy_swapped_{cue}": accuracy(model, swapped.x, swapped.y),
        f"accuracy_no_{cue}": accuracy(model, test.x, test.y),
        "chance_accuracy": 1.0 / len(dw.CLASSES),
        "test_n": len(with_cue.y),
        f"committed_accuracy_with_{cue}": accuracy(model, with_cue.x[:k], with_cue.y[:k]),
        f"committed_accuracy_swapped_{cue}": accuracy(model, swapped.x[:k], swapped.y[:k]),
    }


def train_sound(cfg: DemoConfig, out: Path, train: _Data, test: _Data, commit_test: _Data) -> dict[str, Any]:
    """The sound model, trained on marker-free data, with its checkpoint series (fp16, every half epoch)."""
    seed = cfg.seed + 1
    torch.manual_seed(seed)
    model = build_classifier(cfg, len(dw.CLASSES))
    ckpts: list[dict[str, Any]] = []

    def on_checkpoint(module: nn.Module, epoch: float, step: int) -> None:
        path = out / "checkpoints" / f"sound_ckpt_{len(ckpts) + 1:02d}.safetensors"
        save_classifier(module, path, cfg, dw.CLASSES, half=True)
        reloaded = load_saved(path)
        acc = accuracy(reloaded, test.x, test.y)
        ckpts.append({"file": _rel(path, out), "epoch": round(epoch, 3), "step": step, "test_accuracy": acc})
        log.info("checkpoint %d (epoch %.2f): test accuracy %.3f", len(ckpts), epoch, acc)

    t0 = time.perf_counter()
    losses = train_classifier(
        model,
        train.x,
        train.y,
        epochs=cfg.epochs_sound,
        cfg=cfg,
        seed=seed,
        checkpoints_per_epoch=cfg.checkpoints_per_epoch,
        on_checkpoint=on_checkpoint,
    )
    seconds = time.perf_counter() - t0
    path = save_classifier(model, out / "models" / "sound.safetensors", cfg, dw.CLASSES, half=False)
    reloaded = load_saved(path)
    entry = _model_entry(
        path,
        out,
        cfg,
        seed,
        {"sample": "train", "train": _counts(train.y, dw.CLASSES), "test": _counts(test.y, dw.CLASSES)},
        cfg.epochs_sound,
        **_test_accuracies(reloaded, test, commit_test),
        train_loss=[round(v, 4) for v in losses],
        train_seconds=round(seconds, 1),
        description="trained on marker-free synthetic radiographs (normal / nodule / effusion)",
    )
    entry["checkpoints"] = ckpts
    return entry


def train_shortcut(cfg: DemoConfig, out: Path, test: _Data) -> dict[str, Any]:
    """Trained where the marker tag gives the label away and lesions are faint: it learns the marker."""
    seed = cfg.seed + 2
    train = _data(cfg, "shortcut_train", cfg.n_shortcut_train, cfg.shortcut_lesion_strength)
    with_marker = _data(cfg, "shortcut", cfg.n_shortcut_test)
    swapped = _data(cfg, "shortcut_swapped", cfg.n_shortcut_test)
    path, reloaded, losses, seconds = _fit(cfg, out, "shortcut", train, seed, cfg.epochs_shortcut, half=False)
    return _model_entry(
        path,
        out,
        cfg,
        seed,
        {
            "sample": "shortcut_train",
            "train": _counts(train.y, dw.CLASSES),
            "train_lesion_strength": cfg.shortcut_lesion_strength,
            "test_with_marker": _counts(with_marker.y, dw.CLASSES),
            "test_swapped_marker": _counts(swapped.y, dw.CLASSES),
        },
        cfg.epochs_shortcut,
        **_shortcut_accuracies(reloaded, "marker", with_marker, swapped, test, cfg.n_commit_shortcut),
        train_loss=[round(v, 4) for v in losses],
        train_seconds=round(seconds, 1),
        description="trained with a burned-in tag whose letter gives the label; lesions faint",
    )


def _init_from(model: nn.Module, source: nn.Module) -> None:
    """Copy every matching tensor; the last layer keeps the source's rows for the shared classes."""
    own = model.state_dict()
    for key, value in source.state_dict().items():
        if key in own and own[key].shape == value.shape:
            own[key] = value.clone()
        elif key in own and own[key].ndim >= 1 and own[key].shape[1:] == value.shape[1:]:
            own[key][: value.shape[0]] = value
    model.load_state_dict(own)


def train_garbage(
    cfg: DemoConfig, out: Path, sound: nn.Module, train: _Data, test: _Data, commit_test: _Data
) -> dict[str, Any]:
    """Classes + "garbage", fine-tuned from the sound model with OOD images as the extra class."""
    seed = cfg.seed + 3
    ood_train = _data(cfg, "ood_train", cfg.n_ood_train)
    ood_test = _data(cfg, "ood", cfg.n_ood_test)
    names = (*dw.CLASSES, GARBAGE)
    g = len(dw.CLASSES)
    torch.manual_seed(seed)
    model = build_classifier(cfg, len(names))
    _init_from(model, sound)
    n_id = min(cfg.n_garbage_id, len(train.x))
    x = torch.cat([train.x[:n_id], ood_train.x])
    y = torch.cat([train.y[:n_id], torch.full((len(ood_train.x),), g, dtype=torch.int64)])
    t0 = time.perf_counter()
    losses = train_classifier(model, x, y, epochs=cfg.epochs_garbage, cfg=cfg, seed=seed, lr=cfg.lr / 2)
    seconds = time.perf_counter() - t0
    path = save_classifier(
        model, out / "models" / "garbage.safetensors", cfg, names, half=False, garbage=True
    )
    reloaded = load_saved(path)
    pred_id = predict(reloaded, test.x).argmax(1)
    pred_ood = predict(reloaded, ood_test.x).argmax(1)
    k = cfg.n_commit_ood
    by_kind: dict[str, list[bool]] = {}
    for case, p in zip(ood_test.cases, pred_ood.tolist()):
        by_kind.setdefault(str(case.meta["ood_kind"]), []).append(p == g)
    return _model_entry(
        path,
        out,
        cfg,
        seed,
        {
            "sample": f"train[:{n_id}] + ood_train",
            "train": {**_counts(train.y[:n_id], dw.CLASSES), GARBAGE: len(ood_train.x)},
            "ood_test": len(ood_test.x),
            "id_test": len(test.x),
            "ood_train_sources": sorted({str(c.meta.get("source")) for c in ood_train.cases}),
            "ood_test_sources": sorted({str(c.meta.get("source")) for c in ood_test.cases}),
        },
        cfg.epochs_garbage,
        garbage_class=GARBAGE,
        ood_rejection_rate=float((pred_ood == g).float().mean()),
        ood_rejection_by_kind={k_: float(np.mean(v)) for k_, v in sorted(by_kind.items())},
        id_false_rejection_rate=float((pred_id == g).float().mean()),
        test_accuracy=float((pred_id == test.y).float().mean()),
        test_n=len(test.y),
        committed_ood_rejection_rate=float((pred_ood[:k] == g).float().mean()),
        committed_id_false_rejection_rate=float(
            (predict(reloaded, commit_test.x).argmax(1) == g).float().mean()
        ),
        train_loss=[round(v, 4) for v in losses],
        train_seconds=round(seconds, 1),
        initialised_from="sound",
        description="sound classes + 'garbage', fine-tuned from the sound model with OOD images as garbage",
    )


def _seg_targets(cases: Sequence[dw.Case]) -> torch.Tensor:
    t = np.zeros((len(cases), cases[0].image.shape[0], cases[0].image.shape[1]), np.int64)
    for i, c in enumerate(cases):
        if c.label > 0:
            t[i][c.lesion_mask] = c.label
    return torch.from_numpy(t)


def dice_scores(pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Mean per-image Dice of each lesion class on the images of that class, and of lesion-vs-background on
    every abnormal image (both empty → 1)."""
    result: dict[str, float] = {}
    fg_scores = []
    for c in range(1, len(SEG_CLASSES)):
        scores = []
        for i in torch.nonzero(labels == c).flatten().tolist():
            a, b = pred[i] == c, target[i] == c
            denom = int(a.sum() + b.sum())
            scores.append(1.0 if denom == 0 else 2.0 * int((a & b).sum()) / denom)
            fa, fb = pred[i] > 0, target[i] > 0
            fd = int(fa.sum() + fb.sum())
            fg_scores.append(1.0 if fd == 0 else 2.0 * int((fa & fb).sum()) / fd)
        result[SEG_CLASSES[c]] = float(np.mean(scores)) if scores else float("nan")
    result["lesion_vs_background"] = float(np.mean(fg_scores)) if fg_scores else float("nan")
    normals = torch.nonzero(labels == 0).flatten()
    result["normal_images_with_predicted_lesion"] = (
        float(np.mean([(pred[i] > 0).any().item() for i in normals.tolist()]))
        if len(normals)
        else float("nan")
    )
    return result


@torch.inference_mode()
def segment(model: nn.Module, x_u8: torch.Tensor, batch: int = 16) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalise(x_u8[i : i + batch])).argmax(1) for i in range(0, len(x_u8), batch)])


def train_segmentation(cfg: DemoConfig, out: Path, train: _Data, test: _Data) -> dict[str, Any]:
    """A small U-Net (verification.io.architectures) trained on random crops, evaluated on full images."""
    from verification.io.models import build_architecture, save_model

    seed = cfg.seed + 4
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    arch_kwargs = {"base": cfg.seg_base, "depth": 3}
    model = build_architecture("unet", num_classes=len(SEG_CLASSES), in_channels=1, **arch_kwargs)
    target = _seg_targets(train.cases)
    # lesions are a few % of the pixels: weight them up so the net does not settle on "background"
    weight = torch.tensor([1.0, 4.0, 2.0])
    n, crop, size = len(train.x), cfg.seg_crop, cfg.size
    steps = max(1, math.ceil(n / cfg.batch_size))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=cfg.epochs_segmentation * steps, pct_start=0.2
    )
    centres = []  # crop around the lesion when there is one, else anywhere on the lungs
    for case in train.cases:
        ys, xs = np.nonzero(case.lesion_mask if case.lesion_mask.any() else case.lung_mask)
        centres.append((int(ys.mean()), int(xs.mean())))
    t0 = time.perf_counter()
    losses = []
    for _epoch in range(cfg.epochs_segmentation):
        model.train()
        order = torch.randperm(n, generator=gen)
        total = 0.0
        for b in range(steps):
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size].tolist()
            xs_, ts_ = [], []
            for i in idx:
                jy, jx = (int(v) for v in torch.randint(-crop // 3, crop // 3 + 1, (2,), generator=gen))
                cy = min(max(centres[i][0] + jy - crop // 2, 0), size - crop)
                cx = min(max(centres[i][1] + jx - crop // 2, 0), size - crop)
                xs_.append(train.x[i, :, cy : cy + crop, cx : cx + crop])
                ts_.append(target[i, cy : cy + crop, cx : cx + crop])
            loss = F.cross_entropy(model(normalise(torch.stack(xs_))), torch.stack(ts_), weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
        log.info("segmentation epoch %d loss %.4f", _epoch + 1, losses[-1])
    seconds = time.perf_counter() - t0
    path = save_model(
        model,
        out / "models" / "segmentation.safetensors",
        architecture="unet",
        arch_kwargs=arch_kwargs,
        class_names=list(SEG_CLASSES),
        in_channels=1,
        input_size=(size, size),
        mean=MEAN,
        std=STD,
        task="segmentation",
    )
    reloaded = load_saved(path)
    dice = dice_scores(segment(reloaded, test.x), _seg_targets(test.cases), test.y)
    return _model_entry(
        path,
        out,
        cfg,
        seed,
        {
            "sample": "train",
            "train": _counts(train.y, dw.CLASSES),
            "test": _counts(test.y, dw.CLASSES),
            "crop": crop,
        },
        cfg.epochs_segmentation,
        task="segmentation",
        dice=dice,
        test_n=len(test.y),
        train_loss=[round(v, 4) for v in losses],
        train_seconds=round(seconds, 1),
        description="U-Net (verification.io.architectures) for lesion masks: background / nodule / effusion",
    )


def train_healthy(
    cfg: DemoConfig, out: Path, name: str, train: _Data, test: _Data, commit_test: _Data
) -> dict[str, Any]:
    """A healthy model: the sound recipe (data, schedule, augmentation) with another seed and/or another
    training sample (``HEALTHY_VARIANTS``); no checkpoints; stored fp16."""
    offset, sample = HEALTHY_VARIANTS[name]
    seed = cfg.seed + 1 + offset
    path, reloaded, losses, seconds = _fit(cfg, out, name, train, seed, cfg.epochs_sound, half=True)
    return _model_entry(
        path,
        out,
        cfg,
        seed,
        {"sample": sample, "train": _counts(train.y, dw.CLASSES), "test": _counts(test.y, dw.CLASSES)},
        cfg.epochs_sound,
        kind="healthy",
        **_test_accuracies(reloaded, test, commit_test),
        train_loss=[round(v, 4) for v in losses],
        train_seconds=round(seconds, 1),
        description=f"the sound recipe with seed {seed} on training sample '{sample}' "
        f"(sound: seed {cfg.seed + 1} on 'train')",
    )


def train_cue(cfg: DemoConfig, out: Path, name: str, test: _Data) -> dict[str, Any]:
    """A shortcut model for cue ``CUE_MODELS[name]``: trained where that cue gives the label away on every
    image and lesions are faint (``cue_lesion_strength``); stored fp16."""
    kind = CUE_MODELS[name]
    seed = cfg.seed + 5 + dw.CUE_KINDS.index(kind)
    train = _data(cfg, f"cue_{kind}_train", cfg.n_cue_train, cfg.cue_lesion_strength)
    with_cue = _data(cfg, f"cue_{kind}", cfg.n_cue_test)
    swapped = _data(cfg, f"cue_{kind}_swapped", cfg.n_cue_test)
    path, reloaded, losses, seconds = _fit(cfg, out, name, train, seed, cfg.epochs_cue, half=True)
    return _model_entry(
        path,
        out,
        cfg,
        seed,
        {
            "sample": f"cue_{kind}_train",
            "train": _counts(train.y, dw.CLASSES),
            "train_lesion_strength": cfg.cue_lesion_strength,
            "train_cue": "on every image, the label's own cue",
            "test_with_cue": _counts(with_cue.y, dw.CLASSES),
            "test_swapped_cue": _counts(swapped.y, dw.CLASSES),
        },
        cfg.epochs_cue,
        kind=f"shortcut:{kind}",
        cue=kind,
        **_shortcut_accuracies(reloaded, "cue", with_cue, swapped, test, cfg.n_commit_cue),
        train_loss=[round(v, 4) for v in losses],
        train_seconds=round(seconds, 1),
        description=f"trained with the {kind} cue giving the label on every image; lesions faint",
    )


def _store_model(out: Path, name: str, entry: dict[str, Any]) -> None:
    """Write one model's entry into the manifest as soon as it is trained (re-read first: another build
    process may have written its own models meanwhile)."""
    manifest = read_manifest(out)
    manifest.setdefault("models", {})[name] = entry
    write_manifest(out, manifest)
    report(name, entry)


def stage_train(cfg: DemoConfig, out: Path, models: Sequence[str] = ORIGINAL_MODELS) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    manifest = read_manifest(out)
    entries: dict[str, Any] = dict(manifest.get("models", {}))
    uses_train = {*ORIGINAL_MODELS, *(n for n, (_, sample) in HEALTHY_VARIANTS.items() if sample == "train")}
    # the training sample is only generated when a model needs it (the cue models have their own)
    train = (
        _data(cfg, "train", cfg.n_train)
        if set(models) & uses_train
        else _Data(
            torch.zeros((0, 1, cfg.size, cfg.size), dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), []
        )
    )
    test = _data(cfg, "test", cfg.n_test)
    commit_test = _Data(
        test.x[: cfg.n_commit_test], test.y[: cfg.n_commit_test], test.cases[: cfg.n_commit_test]
    )
    for name in CUE_MODELS:
        if name in models:
            _store_model(out, name, train_cue(cfg, out, name, test))
    for name, (_offset, sample) in HEALTHY_VARIANTS.items():
        if name in models:
            data = train if sample == "train" else _data(cfg, sample, cfg.n_train)
            _store_model(out, name, train_healthy(cfg, out, name, data, test, commit_test))
    if not set(models) & set(ORIGINAL_MODELS):
        manifest = read_manifest(out)
        manifest.setdefault("train_runs", []).append(
            {
                "models": list(models),
                "seconds": round(time.perf_counter() - t0, 1),
                "torch_threads": cfg.threads,
                "generator_workers": cfg.workers,
                "command": f"python -m assets.make_demo --stage train --models {','.join(models)}",
            }
        )
        write_manifest(out, manifest)
        return manifest
    manifest = read_manifest(out)
    entries = dict(manifest.get("models", {}))
    if "sound" in models:
        entries["sound"] = train_sound(cfg, out, train, test, commit_test)
        manifest["checkpoints"] = entries["sound"].pop("checkpoints")
        report("sound", entries["sound"])
    if "shortcut" in models:
        entries["shortcut"] = train_shortcut(cfg, out, test)
        report("shortcut", entries["shortcut"])
    if "garbage" in models:
        sound = load_saved(out / entries["sound"]["file"])
        entries["garbage"] = train_garbage(cfg, out, sound, train, test, commit_test)
        report("garbage", entries["garbage"])
    if "segmentation" in models:
        entries["segmentation"] = train_segmentation(cfg, out, train, test)
        report("segmentation", entries["segmentation"])
    manifest["models"] = entries
    manifest["train_stage"] = {
        "seconds": round(time.perf_counter() - t0, 1),
        "torch_threads": cfg.threads,
        "generator_workers": cfg.workers,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("threads", "workers")},
        "command": "python -m assets.make_demo --stage train",
    }
    write_manifest(out, manifest)
    return manifest


def report(name: str, entry: dict[str, Any]) -> None:
    keys = (
        "test_accuracy",
        "accuracy_with_marker",
        "accuracy_swapped_marker",
        "accuracy_no_marker",
        "accuracy_with_cue",
        "accuracy_swapped_cue",
        "accuracy_no_cue",
        "ood_rejection_rate",
        "id_false_rejection_rate",
        "dice",
        "train_seconds",
    )
    shown = {k: entry[k] for k in keys if k in entry}
    log.info("%s: %s", name, json.dumps(shown))


# ----------------------------------------------------------------------------------------------------
# Stage: samples


def _dicom(pixels_u8: np.ndarray, path: Path, *, modality: str, photometric: str, index: int) -> None:
    """A synthetic 12-bit-in-16 DICOM with rescale and a VOI window; no real patient data."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

    sop_class = {"CR": "1.2.840.10008.5.1.4.1.1.1", "DX": "1.2.840.10008.5.1.4.1.1.1.1"}[modality]
    # deterministic UIDs: derived from the file's role, so rebuilding gives identical files
    uid = functools.partial(generate_uid, prefix="2.25.")
    study = uid(entropy_srcs=["assets.make_demo", "study"])
    series = uid(entropy_srcs=["assets.make_demo", "series", modality])
    instance = uid(entropy_srcs=["assets.make_demo", "instance", path.name])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = instance
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = uid(entropy_srcs=["assets.make_demo", "implementation"])
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = modality
    ds.PatientName = "DEMO^PATIENT"
    ds.PatientID = "DEMO-0001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index
    ds.Manufacturer = "attention-verification demo (synthetic)"
    ds.ImageComments = "Synthetic chest radiograph from assets/demo_world.py; not a real patient"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImagerPixelSpacing = [1.6, 1.6]
    ds.PixelSpacing = [1.6, 1.6]
    ds.Rows, ds.Columns = pixels_u8.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    # stored values in 0..4095; output = stored * slope + intercept
    stored = np.round(pixels_u8.astype(np.float64) * (4095.0 / 255.0)).astype(np.uint16)
    if photometric == "MONOCHROME1":
        stored = (4095 - stored).astype(np.uint16)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "US"
    ds.WindowCenter, ds.WindowWidth = 1024, 4096
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    pydicom.dcmread(path)  # fail here, not in the app, when a tag is malformed


def stage_samples(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Sample files for download: PNGs (8- and 16-bit), DICOMs (CR/DX, MONOCHROME2/1) and the sound model in
    every supported format (.safetensors + .json, state-dict .pt + .json, torch.export .pt2 + .json)."""
    manifest = read_manifest(out)
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    samples: list[dict[str, Any]] = []
    test = manifest["splits"]["test"]
    by_label = {c: next(e for e in test if e["label"] == c) for c in dw.CLASSES}
    for label, entry in by_label.items():
        dest = folder / f"cxr_{label}.png"
        dest.write_bytes((out / entry["path"]).read_bytes())
        samples.append({"file": _rel(dest, out), "kind": "image", "label": label, "format": "PNG 8-bit"})
    arr = np.asarray(Image.open(out / by_label["nodule"]["path"]))
    dest = folder / "cxr_nodule_16bit.png"
    Image.fromarray((arr.astype(np.uint16) * 257).astype(np.uint16)).save(dest)
    samples.append({"file": _rel(dest, out), "kind": "image", "label": "nodule", "format": "PNG 16-bit"})
    dicoms = (
        ("nodule", "CR", "MONOCHROME2"),
        ("effusion", "CR", "MONOCHROME1"),
        ("normal", "DX", "MONOCHROME2"),
        ("nodule", "DX", "MONOCHROME1"),
    )
    for k, (label, modality, photometric) in enumerate(dicoms, start=1):
        dest = folder / f"cxr_{label}_{modality.lower()}_{photometric.lower()}.dcm"
        _dicom(
            np.asarray(Image.open(out / by_label[label]["path"])),
            dest,
            modality=modality,
            photometric=photometric,
            index=k,
        )
        samples.append(
            {
                "file": _rel(dest, out),
                "kind": "image",
                "label": label,
                "format": f"DICOM {modality} {photometric}, 12 bits in 16, rescale -1024, window 1024/4096",
            }
        )
    samples += _model_samples(cfg, out, folder, manifest)
    manifest["samples"] = samples
    write_manifest(out, manifest)
    for s in samples:
        log.info("sample %s (%s)", s["file"], s["format"])
    return manifest


def _model_samples(
    cfg: DemoConfig, out: Path, folder: Path, manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    from verification.io.models import load_model

    src = out / manifest["models"]["sound"]["file"]
    loaded = load_model(src)
    sidecar = src.with_suffix(".json").read_text(encoding="utf-8")

    def export(dest: Path) -> None:
        module = loaded.module.eval()
        example = torch.zeros(2, 1, cfg.size, cfg.size)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, dest)

    writers: tuple[tuple[str, Callable[[Path], object], str], ...] = (
        ("sound_model.safetensors", lambda dest: dest.write_bytes(src.read_bytes()), "safetensors"),
        (
            "sound_model_state_dict.pt",
            lambda dest: torch.save(loaded.module.state_dict(), dest),
            "state-dict .pt (torch.save)",
        ),
        ("sound_model_export.pt2", export, "torch.export program .pt2 (dynamic batch)"),
    )
    result = []
    for name, write, what in writers:
        dest = folder / name
        write(dest)
        dest.with_suffix(".json").write_text(sidecar, encoding="utf-8")
        result.append(
            {
                "file": _rel(dest, out),
                "sidecar": _rel(dest.with_suffix(".json"), out),
                "kind": "model",
                "format": f"{what} + JSON sidecar",
            }
        )
    return result


# ----------------------------------------------------------------------------------------------------
# Stage: references


def _load_split_images(out: Path, split: str) -> tuple[list[Any], list[dict[str, Any]]]:
    from verification.io.images import load_image

    entries = read_manifest(out)["splits"][split]
    return [load_image(out / e["path"]) for e in entries], entries


def stage_references(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """The sound model's reference bundle from the in-distribution validation ("reference") split."""
    try:
        from verification.reference import build_reference
    except ImportError as exc:
        raise RuntimeError(
            "verification.reference is not available yet; run this stage once it has landed"
        ) from exc
    from verification.io.models import load_model

    manifest = read_manifest(out)
    model = load_model(out / manifest["models"]["sound"]["file"], name="sound")
    images, entries = _load_split_images(out, "reference")
    labels = [dw.CLASSES.index(e["label"]) for e in entries]
    bundle = build_reference(model, images, labels, method="gradcam")
    path = out / "references" / "sound_gradcam.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = bundle.save(path)
    saved_path = Path(saved) if isinstance(saved, str | Path) else path
    manifest.setdefault("references", {})["sound"] = {
        "file": _rel(saved_path, out),
        "bundle_json": _rel(saved_path.with_suffix(".json"), out),
        "model": "sound",
        "split": "reference",
        "method": "gradcam",
        "n_images": len(images),
        "per_class_counts": dict(zip(bundle.class_names, (int(c) for c in bundle.counts))),
    }
    write_manifest(out, manifest)
    log.info("reference bundle %s from %d images", saved_path, len(images))
    return manifest


# ----------------------------------------------------------------------------------------------------
# Stage: attention


def _masks(out: Path, entries: Sequence[dict[str, Any]], key: str, size: int) -> np.ndarray:
    masks = np.zeros((len(entries), size, size), bool)
    for i, e in enumerate(entries):
        if e.get(key):
            masks[i] = np.asarray(Image.open(out / e[key])) > 127
    return masks


def attention_numbers(maps: np.ndarray, lesion: np.ndarray, marker: np.ndarray) -> dict[str, Any]:
    """Grad-CAM maps (N, H, W) in [0, 1] against masks: mean IoU of map ≥ 0.5 with the lesion, pointing game
    (map maximum inside the lesion; and within 8 px of it), energy share on lesion and marker."""
    import verification.metrics.functional as mf

    t_maps = torch.from_numpy(maps.astype(np.float32))
    has_lesion = lesion.reshape(len(lesion), -1).any(1)
    has_marker = marker.reshape(len(marker), -1).any(1)
    binary = maps >= 0.5
    inter = (binary & lesion).reshape(len(maps), -1).sum(1)
    union = (binary | lesion).reshape(len(maps), -1).sum(1)
    iou = inter[has_lesion] / np.maximum(union[has_lesion], 1)
    result: dict[str, Any] = {
        "n_images": len(maps),
        "n_with_lesion": int(has_lesion.sum()),
        "n_constant_maps": int((maps.reshape(len(maps), -1).max(1) <= 0).sum()),  # no energy: left out
    }
    t_has_lesion, t_has_marker = torch.from_numpy(has_lesion), torch.from_numpy(has_marker)
    if has_lesion.any():
        t_les = torch.from_numpy(lesion[has_lesion].astype(np.float32))
        result["lesion_iou_mean"] = float(iou.mean())
        result["pointing_game"] = float(np.nanmean(_values(mf.pointing_game(t_maps[t_has_lesion], t_les))))
        result["pointing_game_tol8"] = float(
            np.nanmean(_values(mf.pointing_game(t_maps[t_has_lesion], t_les, tolerance=8)))
        )
        result["lesion_energy"] = float(np.nanmean(_values(mf.energy_in_mask(t_maps[t_has_lesion], t_les))))
    if has_marker.any():
        t_mark = torch.from_numpy(marker[has_marker].astype(np.float32))
        result["n_with_marker"] = int(has_marker.sum())
        result["marker_energy"] = float(np.nanmean(_values(mf.energy_in_mask(t_maps[t_has_marker], t_mark))))
        result["marker_pointing_game"] = float(
            np.nanmean(_values(mf.pointing_game(t_maps[t_has_marker], t_mark)))
        )
        result["marker_area_share"] = float(marker[has_marker].mean())
    return result


def _values(res: Any) -> np.ndarray:
    """The per-image values of a metrics result (a MetricResult or a plain tensor/array)."""
    value = getattr(res, "values", res)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def stage_attention(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Grad-CAM (default target layer, predicted class) of the sound and shortcut models on the committed
    "test" and "shortcut" splits, against the lesion and marker masks."""
    torch.set_num_threads(cfg.threads)
    from verification.cam import compute_cams, default_target_layer
    from verification.io.images import to_tensor
    from verification.io.models import load_model

    manifest = read_manifest(out)
    result: dict[str, Any] = {"method": "gradcam", "target": "predicted class logit", "threshold": 0.5}
    for name in ("sound", "shortcut"):
        model = load_model(out / manifest["models"][name]["file"], name=name)
        layer = default_target_layer(model.module, (1, 1, cfg.size, cfg.size))
        per_split: dict[str, Any] = {"layer": layer}
        for split in ("test", "shortcut", "shortcut_swapped"):
            images, entries = _load_split_images(out, split)
            x = to_tensor(images, model)
            maps = np.concatenate(
                [
                    compute_cams(model, x[i : i + 20], methods=("gradcam",))[0].maps
                    for i in range(0, len(x), 20)
                ]
            )
            lesion = _masks(out, entries, "lesion_mask", cfg.size)
            marker = _masks(out, entries, "marker_mask", cfg.size)
            numbers = attention_numbers(maps, lesion, marker)
            labels = np.array([e["label"] for e in entries])
            numbers["by_class"] = {
                c: attention_numbers(maps[labels == c], lesion[labels == c], marker[labels == c])
                for c in dw.CLASSES[1:]
                if (labels == c).any()
            }
            with torch.inference_mode():
                pred = model.module(x).argmax(1).numpy()
            numbers["accuracy"] = float(np.mean([dw.CLASSES[p] == e["label"] for p, e in zip(pred, entries)]))
            per_split[split] = numbers
            log.info("attention %s on %s: %s", name, split, json.dumps(numbers))
        result[name] = per_split
    manifest["attention"] = result
    write_manifest(out, manifest)
    return manifest


# ----------------------------------------------------------------------------------------------------
# Stage: evaluate

_ORIGINAL_KINDS: dict[str, str] = {
    "sound": "healthy",
    "shortcut": "shortcut:marker",
    "garbage": "garbage",
    "segmentation": "segmentation",
}
HEALTHY_MIN_ACCURACY = 0.9  # a healthy model is expected SUITABLE on a split only where it is this accurate


def model_kind(name: str, entry: dict[str, Any]) -> str:
    """ "healthy", "shortcut:<cue>", "garbage" or "segmentation"."""
    return str(entry.get("kind") or _ORIGINAL_KINDS.get(name) or f"shortcut:{CUE_MODELS[name]}")


def expected_verdict(kind: str, split: str, accuracy_: float | None) -> tuple[str, str] | None:
    """The verdict the demo's ground truth calls for, and why; None for a twin split (the finding
    counterfactual's companion of its original, not a split to judge on its own)."""
    if split.endswith(LESION_FREE):
        return None
    if split == "ood":
        return "CANNOT VERIFY", "out-of-distribution images: none is assessable"
    if split.startswith("shifted_"):
        return "CANNOT VERIFY", f"strongly shifted images ({split.removeprefix('shifted_')}): not assessable"
    if kind.startswith("shortcut:"):
        cue = kind.split(":", 1)[1]
        return "UNSUITABLE", f"shortcut model: learned the {cue} cue, not the findings"
    if kind in ("healthy", "garbage"):
        if accuracy_ is not None and accuracy_ < HEALTHY_MIN_ACCURACY:
            return "UNSUITABLE", f"healthy recipe, but accuracy {accuracy_:.2f} < {HEALTHY_MIN_ACCURACY} here"
        return "SUITABLE", "healthy recipe: decides from the findings; markers and cues are not used"
    return None


def _committed_x(out: Path, entries: Sequence[dict[str, Any]]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(Image.open(out / e["path"])) for e in entries]))[:, None]


def stage_evaluate(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Every classifier on every committed split (the committed PNGs, as a user loads them) and on larger
    generated samples of the clean and cue splits: accuracy, the predicted class of every committed image, the
    model's kind and the verdict expected on each split."""
    torch.set_num_threads(cfg.threads)
    manifest = read_manifest(out)
    splits: dict[str, list[dict[str, Any]]] = manifest["splits"]
    committed = {split: _committed_x(out, entries) for split, entries in splits.items()}
    gen_sizes = {"test": cfg.n_test, "shortcut": cfg.n_shortcut_test, "shortcut_swapped": cfg.n_shortcut_test}
    for kind in dw.CUE_KINDS:
        gen_sizes.update({f"cue_{kind}": cfg.n_cue_test, f"cue_{kind}_swapped": cfg.n_cue_test})
    generated = {split: _data(cfg, split, n) for split, n in gen_sizes.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, entry in manifest.get("models", {}).items():
        kind = model_kind(name, entry)
        if kind == "segmentation":
            results[name] = {"kind": kind}
            continue
        model = load_saved(out / entry["file"])
        names = list(entry["class_names"])
        acc: dict[str, float] = {}
        preds: dict[str, str] = {}
        for split, entries in splits.items():
            pred = predict(model, committed[split]).argmax(1).tolist()
            preds[split] = "".join(str(p) for p in pred)
            truth = [e["label"] if e["label"] is not None else entry.get("garbage_class") for e in entries]
            if all(t is None for t in truth):
                continue  # OOD images and no garbage class: nothing to count
            acc[split] = round(float(np.mean([names[p] == t for p, t in zip(pred, truth)])), 4)
        acc_gen = {split: round(accuracy(model, d.x, d.y), 4) for split, d in generated.items()}
        verdicts, basis = {}, {}
        for split in splits:
            ev = expected_verdict(kind, split, acc_gen.get(split, acc.get(split)))
            if ev is not None:
                verdicts[split], basis[split] = ev
        results[name] = {
            "kind": kind,
            "accuracy": acc,
            "accuracy_n": {split: len(splits[split]) for split in acc},
            "accuracy_generated": acc_gen,
            "accuracy_generated_n": {split: len(d.y) for split, d in generated.items()},
            "committed_predictions": preds,
            "expected_verdict": verdicts,
            "expected_verdict_basis": basis,
        }
        log.info("evaluate %s (%s): %s", name, kind, json.dumps(acc_gen))
    manifest = read_manifest(out)  # read late: keep what another build process wrote meanwhile
    for name, fields in results.items():
        if name in manifest.get("models", {}):
            manifest["models"][name].update(fields)
    manifest["evaluation"] = {
        "committed": "every committed split, images read from their PNGs; committed_predictions holds the "
        "predicted class index of each image, in manifest order",
        "generated": {split: n for split, n in gen_sizes.items()},
        "healthy_min_accuracy": HEALTHY_MIN_ACCURACY,
        "command": "python -m assets.make_demo --stage evaluate",
    }
    write_manifest(out, manifest)
    return manifest


# ----------------------------------------------------------------------------------------------------
# Stage: calibrate


def stage_calibrate(cfg: DemoConfig, out: Path) -> dict[str, Any]:
    """Attach the verdict's calibration to the sound model's reference bundle: thresholds from the spread of
    the healthy demo models, their power checked against the known-bad ones (every shortcut model and the
    cascading-randomised copy of the sound model), on ``cfg.n_calibration`` freshly generated images (clean,
    marker and every cue; none of them committed or in a bench split) with their lesion masks; the anatomy is
    found automatically, as ``verify`` finds it."""
    torch.set_num_threads(cfg.threads)
    try:
        from verification.verdict import VerdictConfig, calibrate_bundle
    except ImportError as exc:
        raise RuntimeError(
            "verification.verdict's calibration API is not available; run this stage later"
        ) from exc
    from verification.io.models import load_model
    from verification.reference import load_bundle

    manifest = read_manifest(out)
    models = manifest["models"]
    healthy = {
        n: load_model(out / e["file"], name=n) for n, e in models.items() if model_kind(n, e) == "healthy"
    }
    bad = {
        n: load_model(out / e["file"], name=n)
        for n, e in models.items()
        if model_kind(n, e).startswith("shortcut:")
    }
    ref = manifest["references"]["sound"]
    bundle = load_bundle(out / ref["file"], model=healthy["sound"])
    cal = _data(cfg, "calibration", cfg.n_calibration)
    labels = [dw.CLASSES[int(y)] for y in cal.y]
    config = VerdictConfig(faithfulness=False)
    t0 = time.perf_counter()
    calibrated = calibrate_bundle(
        bundle,
        healthy,
        normalise(cal.x),  # the models' input: every demo model shares the sound model's preprocessing
        labels,
        bad=bad,
        annotations=[c.lesion_mask if c.lesion_mask.any() else None for c in cal.cases],
        # None: the region is found automatically, as `verify` does for users without lung masks; edges
        # calibrated on the generator's true lungs sit tighter than what a verify run can measure.
        anatomy=None,
        config=config,
        randomised=True,
    )
    seconds = time.perf_counter() - t0
    calibrated.save(out / ref["file"])
    manifest = read_manifest(out)
    manifest["references"]["sound"]["calibration"] = {
        "healthy": list(healthy),
        "known_bad": [*bad, "randomised (cascading, from the sound model)"],
        "images": {
            "split": "calibration (generated, not committed)",
            "n": len(cal.y),
            "kinds": list(CALIBRATION_KINDS),
        },
        "annotations": "lesion masks; anatomy: found automatically (verification.anatomy), as verify does",
        "config": config.to_dict(),
        "seconds": round(seconds, 1),
        "command": "python -m assets.make_demo --stage calibrate",
    }
    write_manifest(out, manifest)
    log.info("calibrated the sound bundle in %.1fs on %d images", seconds, len(cal.y))
    return manifest


STAGES: dict[str, Callable[..., Any]] = {
    "data": stage_data,
    "train": stage_train,
    "samples": stage_samples,
    "references": stage_references,
    "attention": stage_attention,
    "evaluate": stage_evaluate,
    "calibrate": stage_calibrate,
}


def run(cfg: DemoConfig, out: Path, stages: Sequence[str], models: Sequence[str] = MODELS) -> dict[str, Any]:
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; choose from {', '.join(STAGES)}")
    manifest: dict[str, Any] = {}
    for stage in stages:
        t0 = time.perf_counter()
        if stage == "train":
            manifest = stage_train(cfg, out, models)
        else:
            manifest = STAGES[stage](cfg, out)
        log.info("stage %s done in %.1fs", stage, time.perf_counter() - t0)
    return manifest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", action="append", choices=[*STAGES, "all"], help="repeatable; default all")
    parser.add_argument("--out", type=Path, default=DEMO_DIR)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy shared machine)"
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--models",
        default=",".join(MODELS),
        help="train stage: comma-separated subset of " + ",".join(MODELS),
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    stages = list(STAGES) if not args.stage or "all" in args.stage else args.stage
    cfg = replace(DemoConfig(), threads=args.threads, workers=args.workers)
    run(cfg, args.out, stages, [m for m in args.models.split(",") if m])


if __name__ == "__main__":
    main()
