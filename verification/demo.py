"""Paths into the built-in demo world (``assets/demo``), read from its ``manifest.json``.

The demo holds synthetic chest radiographs with known findings, the models trained on them (healthy models:
"sound" and variants with another seed or training sample; shortcut models, each of which learned one cue:
the marker letter, a token outside the lungs, the acquisition "hospital", a texture inside the lungs; a
garbage-class model; a segmentation model), a checkpoint series and reference bundles;
``python -m assets.make_demo`` makes them and records how in the manifest, with each model's kind, its
accuracy on every split and the verdict expected on each split.

Every chest image has a lung mask (the anatomical region of interest), every abnormal one a lesion mask;
``<split>_lesion_free`` splits hold the same cases regenerated without their lesion (``demo_twins``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from verification.errors import VerificationError

HEALTHY_MODELS: tuple[str, ...] = ("sound", "healthy_seed", "healthy_data", "healthy_seed_data")
SHORTCUT_MODELS: tuple[str, ...] = (
    "shortcut",
    "shortcut_token",
    "shortcut_acquisition",
    "shortcut_texture",
)
MODEL_NAMES: tuple[str, ...] = (*HEALTHY_MODELS, *SHORTCUT_MODELS, "garbage", "segmentation")
"""The demo models ``demo_model_path`` knows."""

# kinds of the models built before the manifest recorded a kind
_DEFAULT_KINDS: dict[str, str] = {
    "sound": "healthy",
    "shortcut": "shortcut:marker",
    "garbage": "garbage",
    "segmentation": "segmentation",
}
VERDICTS: tuple[str, ...] = ("SUITABLE", "UNSUITABLE", "CANNOT VERIFY")
LESION_FREE = "_lesion_free"


class DemoAssetsError(VerificationError):
    """The demo assets are missing, incomplete, or the name asked for is not part of them."""


@dataclass(frozen=True)
class MaskRef:
    """A mask file, or frame ``index`` of a stacked mask file (frames as tall as the image is wide, stacked
    top to bottom: frame i is rows ``i*W .. (i+1)*W``)."""

    path: Path
    index: int | None = None

    def load(self) -> np.ndarray:
        """The mask as a boolean (H, W) array (pixels > 127), a fresh copy."""
        try:
            mask = _read_mask_file(self.path, self.path.stat().st_mtime_ns)
        except (OSError, ValueError) as exc:
            raise DemoAssetsError(
                f"cannot read the demo mask '{self.path}': {exc}; rebuild with 'python -m assets.make_demo'"
            ) from exc
        if self.index is None:
            return mask.copy()
        side = mask.shape[1]
        if (self.index + 1) * side > mask.shape[0]:
            raise DemoAssetsError(
                f"the stacked mask '{self.path}' has {mask.shape[0] // side} frames, no frame {self.index}"
            )
        return mask[self.index * side : (self.index + 1) * side].copy()


@functools.lru_cache(maxsize=16)
def _read_mask_file(path: Path, mtime_ns: int) -> np.ndarray:
    """A decoded mask file (a stacked one is read once for all its frames), cached until the file changes."""
    with Image.open(path) as img:
        mask = np.asarray(img.convert("L")) > 127
    mask.setflags(write=False)
    return mask


_MASK_KEYS: tuple[str, ...] = ("lesion_mask", "marker_mask", "lung_mask", "cue_mask", "removed_lesion_mask")


@dataclass(frozen=True)
class DemoItem:
    """One demo image with its ground truth.

    ``label`` is the class name (None for out-of-distribution images); ``lesion_mask`` / ``marker_mask`` are
    PNG masks (0/255, same size as the image) or None when the image has no lesion / no marker.
    ``lung_mask`` (the anatomical region of interest; every chest image has one, out-of-distribution images
    none) and ``cue_mask`` (the pixels of a localised shortcut cue: the token disc; the lungs for the texture
    cue) are frames of stacked files: read them with ``load_mask``. A lesion-free twin names its original
    (``twin_of``) and the lesion that was removed (``removed_lesion_mask``). ``meta`` holds the generator's
    facts about the image (marker / cue class, shift kind, OOD source).
    """

    path: Path
    label: str | None
    lesion_mask: Path | None
    marker_mask: Path | None
    split: str
    meta: tuple[tuple[str, Any], ...] = ()
    lung_mask: MaskRef | None = None
    cue_mask: MaskRef | None = None
    twin_of: Path | None = None
    removed_lesion_mask: Path | None = None

    def load_mask(self, kind: str) -> np.ndarray | None:
        """Mask ``kind`` ("lesion", "marker", "lung", "cue", "removed_lesion") as a boolean (H, W) array, or
        None when the image has none."""
        key = f"{kind}_mask"
        if key not in _MASK_KEYS:
            raise ValueError(f"unknown mask kind {kind!r}; expected one of {[k[:-5] for k in _MASK_KEYS]}")
        ref = getattr(self, key)
        if ref is None:
            return None
        return (ref if isinstance(ref, MaskRef) else MaskRef(ref)).load()


def demo_root() -> Path:
    """The folder holding the demo assets and their manifest (``assets/demo`` in the repository)."""
    return Path(__file__).resolve().parent.parent / "assets" / "demo"


@functools.lru_cache(maxsize=4)
def _read_manifest(path: Path, mtime_ns: int) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DemoAssetsError(
            f"cannot read the demo manifest '{path}': {exc}; rebuild it with 'python -m assets.make_demo'"
        ) from exc
    if not isinstance(data, dict):
        raise DemoAssetsError(f"the demo manifest '{path}' is not a JSON object; rebuild it")
    return data


def load_manifest(root: Path | None = None) -> dict[str, Any]:
    """The parsed manifest (cached until the file changes)."""
    path = (root or demo_root()) / "manifest.json"
    if not path.is_file():
        raise DemoAssetsError(
            f"the demo manifest '{path}' is missing; build the demo with 'python -m assets.make_demo'"
        )
    return _read_manifest(path, path.stat().st_mtime_ns)


def _resolve(relative: str | None, root: Path) -> Path | None:
    return None if relative is None else root / relative


def demo_model_path(name: str, *, root: Path | None = None) -> Path:
    """Weights file of a demo model (``MODEL_NAMES``; ``demo_models`` lists them with their kinds); its
    sidecar ``<stem>.json`` lies beside it."""
    root = root or demo_root()
    models = load_manifest(root).get("models", {})
    if name not in models:
        known = ", ".join(sorted(models)) or "none yet"
        raise DemoAssetsError(f"no demo model called '{name}' (available: {known})")
    path = root / str(models[name]["file"])
    if not path.is_file():
        raise DemoAssetsError(
            f"demo model file '{path}' is missing; rebuild with 'python -m assets.make_demo'"
        )
    return path


def demo_model_info(name: str, *, root: Path | None = None) -> dict[str, Any]:
    """The manifest's record of a demo model: seed, data, epochs and the numbers measured on it."""
    demo_model_path(name, root=root)
    return dict(load_manifest(root)["models"][name])


def demo_splits(*, root: Path | None = None) -> list[str]:
    """Names of the committed image splits ("test", "reference", "shortcut", "shortcut_swapped",
    "shifted_<kind>", "ood", "cue_<kind>", "cue_<kind>_swapped", "test_lesion_free"); ``split_kind`` says what
    each holds."""
    return list(load_manifest(root).get("splits", {}))


def demo_images(split: str, *, root: Path | None = None) -> list[DemoItem]:
    """The images of one committed split, in manifest order."""
    root = root or demo_root()
    splits = load_manifest(root).get("splits", {})
    if split not in splits:
        raise DemoAssetsError(f"no demo split called '{split}' (available: {', '.join(splits) or 'none'})")
    own = {"path", "label", "twin_of", *_MASK_KEYS, "lung_mask_index", "cue_mask_index"}
    items = []
    for entry in splits[split]:
        meta = tuple((k, v) for k, v in entry.items() if k not in own)
        items.append(
            DemoItem(
                path=root / str(entry["path"]),
                label=entry.get("label"),
                lesion_mask=_resolve(entry.get("lesion_mask"), root),
                marker_mask=_resolve(entry.get("marker_mask"), root),
                split=split,
                meta=meta,
                lung_mask=_mask_ref(entry, "lung_mask", root),
                cue_mask=_mask_ref(entry, "cue_mask", root),
                twin_of=_resolve(entry.get("twin_of"), root),
                removed_lesion_mask=_resolve(entry.get("removed_lesion_mask"), root),
            )
        )
    return items


def _mask_ref(entry: dict[str, Any], key: str, root: Path) -> MaskRef | None:
    rel = entry.get(key)
    if rel is None:
        return None
    index = entry.get(f"{key}_index")
    return MaskRef(root / str(rel), None if index is None else int(index))


def demo_twins(split: str = "test", *, root: Path | None = None) -> list[tuple[DemoItem, DemoItem]]:
    """(original, lesion-free twin) pairs of ``split``: the twin is the same case regenerated with the
    lesion's density at 0 (same anatomy, cue and noise); only the abnormal images have one."""
    twins_split = split + LESION_FREE
    if twins_split not in demo_splits(root=root):
        with_twins = [s.removesuffix(LESION_FREE) for s in demo_splits(root=root) if s.endswith(LESION_FREE)]
        raise DemoAssetsError(
            f"the demo has no lesion-free twins of '{split}' "
            f"(splits with twins: {', '.join(with_twins) or 'none'})"
        )
    originals = {item.path: item for item in demo_images(split, root=root)}
    return [(originals[t.twin_of], t) for t in demo_images(twins_split, root=root) if t.twin_of in originals]


def split_kind(split: str) -> str:
    """What a demo split holds: "clean" (test, reference), "marker" / "marker_swapped" (the letter tag),
    "cue:<kind>" / "cue_swapped:<kind>", "shifted:<kind>", "ood", or "lesion_free:<split>" (twins)."""
    if split.endswith(LESION_FREE):
        return f"lesion_free:{split.removesuffix(LESION_FREE)}"
    if split in ("test", "reference"):
        return "clean"
    if split == "shortcut":
        return "marker"
    if split == "shortcut_swapped":
        return "marker_swapped"
    if split.startswith("cue_"):
        kind = split.removeprefix("cue_")
        if kind.endswith("_swapped"):
            return f"cue_swapped:{kind.removesuffix('_swapped')}"
        return f"cue:{kind}"
    if split.startswith("shifted_"):
        return f"shifted:{split.removeprefix('shifted_')}"
    if split == "ood":
        return "ood"
    return "other"


def demo_model_kind(name: str, *, root: Path | None = None) -> str:
    """ "healthy", "shortcut:<cue>" (marker, token, acquisition, texture), "garbage" or "segmentation"."""
    info = demo_model_info(name, root=root)
    return str(info.get("kind") or _DEFAULT_KINDS.get(name, "unknown"))


def demo_models(kind: str | None = None, *, root: Path | None = None) -> dict[str, dict[str, Any]]:
    """The manifest's models whose weights are present, name → record (with "kind" filled in), in manifest
    order. ``kind`` filters: "healthy", "shortcut" (every "shortcut:<cue>"), "shortcut:token", "garbage"."""
    root = root or demo_root()
    result: dict[str, dict[str, Any]] = {}
    for name, info in load_manifest(root).get("models", {}).items():
        if not (root / str(info["file"])).is_file():
            continue
        record = {**info, "kind": info.get("kind") or _DEFAULT_KINDS.get(name, "unknown")}
        if kind is None or record["kind"] == kind or record["kind"].startswith(kind + ":"):
            result[name] = record
    return result


def demo_expected_verdicts(
    *, min_images_per_class: int | None = None, root: Path | None = None
) -> dict[tuple[str, str], str]:
    """(model, split) → the verdict the demo's ground truth expects ("SUITABLE", "UNSUITABLE",
    "CANNOT VERIFY"), from each model's ``expected_verdict`` record. With ``min_images_per_class``, an
    expected SUITABLE on a split with fewer labelled images in some class becomes CANNOT VERIFY (too few)."""
    root = root or demo_root()
    splits = load_manifest(root).get("splits", {})
    result: dict[tuple[str, str], str] = {}
    for name, info in demo_models(root=root).items():
        for split, verdict in (info.get("expected_verdict") or {}).items():
            if verdict == "SUITABLE" and min_images_per_class is not None and split in splits:
                labels = [e.get("label") for e in splits[split]]
                classes = [str(c) for c in info.get("class_names", []) if c != info.get("garbage_class")]
                if min((labels.count(c) for c in classes), default=0) < min_images_per_class:
                    verdict = "CANNOT VERIFY"
            result[(name, split)] = str(verdict)
    return result


def demo_checkpoints(*, root: Path | None = None) -> list[Path]:
    """The sound model's checkpoint series, in training order (weights files; sidecars beside them)."""
    root = root or demo_root()
    return [root / str(c["file"]) for c in load_manifest(root).get("checkpoints", [])]


def demo_checkpoint_info(*, root: Path | None = None) -> list[dict[str, Any]]:
    """Per checkpoint: file, epoch, step and measured test accuracy, in training order."""
    return [dict(c) for c in load_manifest(root).get("checkpoints", [])]


def demo_reference_bundle(name: str = "sound", *, root: Path | None = None) -> Path:
    """The reference bundle built from the ``name`` model's in-distribution validation ("reference") split."""
    root = root or demo_root()
    bundles = load_manifest(root).get("references", {})
    if name not in bundles:
        raise DemoAssetsError(
            f"no demo reference bundle for '{name}'; "
            "build it with 'python -m assets.make_demo --stage references'"
        )
    return root / str(bundles[name]["file"])


def demo_samples(*, root: Path | None = None) -> list[dict[str, Any]]:
    """Downloadable sample files (PNG, DICOM, the sound model in each format) with their descriptions; each
    entry's ``path`` is absolute."""
    root = root or demo_root()
    return [{**s, "path": root / str(s["file"])} for s in load_manifest(root).get("samples", [])]


MODEL_LABELS: dict[str, str] = {
    "sound": "Healthy classifier (sound)",
    "healthy_seed": "Healthy classifier, another seed",
    "healthy_data": "Healthy classifier, another training sample",
    "healthy_seed_data": "Healthy classifier, another seed and sample",
    "shortcut": "Shortcut classifier (marker letter)",
    "shortcut_token": "Shortcut classifier (token outside the lungs)",
    "shortcut_acquisition": "Shortcut classifier (which hospital: exposure and noise)",
    "shortcut_texture": "Shortcut classifier (texture inside the lungs)",
    "garbage": "With garbage class",
    "segmentation": "Lesion segmentation",
}
_CUE_WORDS: dict[str, str] = {
    "token": "token outside the lungs",
    "acquisition": "hospital (exposure and noise)",
    "texture": "texture inside the lungs",
}


def model_label(name: str) -> str:
    """A short human label for a demo model (the name itself for one this version does not know)."""
    return MODEL_LABELS.get(name, name)


def split_label(split: str) -> str:
    """A short human label for a demo split."""
    kind = split_kind(split)
    head, _, arg = kind.partition(":")
    labels = {
        "marker": "Marker matches the class",
        "marker_swapped": "Markers swapped between classes",
        "ood": "Out of distribution (not chest films)",
    }
    if split == "test":
        return "Test set (in distribution)"
    if split == "reference":
        return "Reference set (trusted)"
    if head == "cue":
        return f"Cue matches the class: {_CUE_WORDS.get(arg, arg)}"
    if head == "cue_swapped":
        return f"Cue swapped between classes: {_CUE_WORDS.get(arg, arg)}"
    if head == "shifted":
        return f"Domain shift: {arg}"
    if head == "lesion_free":
        return f"Lesion removed (twins of '{arg}')"
    return labels.get(kind, split)


def demo_splits_ordered(*, root: Path | None = None) -> list[str]:
    """The committed splits in display order: test, reference, marker, cues, twins, shifts, OOD."""
    rank = {"clean": 0, "marker": 1, "marker_swapped": 1, "cue": 2, "cue_swapped": 2, "lesion_free": 3}
    rank.update({"shifted": 4, "ood": 5, "other": 6})
    splits = demo_splits(root=root)
    return sorted(splits, key=lambda s: (rank[split_kind(s).split(":")[0]], s != "test", splits.index(s)))
