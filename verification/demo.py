"""Paths into the built-in demo world (``assets/demo``), read from its ``manifest.json``.

The demo holds synthetic chest radiographs with known findings, the models trained on them (sound, shortcut,
garbage-class, segmentation), a checkpoint series and reference bundles; ``python -m assets.make_demo`` makes
them and records how in the manifest.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verification.errors import VerificationError

MODEL_NAMES: tuple[str, ...] = ("sound", "shortcut", "garbage", "segmentation")
"""The demo models ``demo_model_path`` knows."""


class DemoAssetsError(VerificationError):
    """The demo assets are missing, incomplete, or the name asked for is not part of them."""


@dataclass(frozen=True)
class DemoItem:
    """One demo image with its ground truth.

    ``label`` is the class name (None for out-of-distribution images); ``lesion_mask`` / ``marker_mask`` are
    PNG masks (0/255, same size as the image) or None when the image has no lesion / no marker. ``meta`` holds
    the generator's facts about the image (marker class, shift kind, OOD source).
    """

    path: Path
    label: str | None
    lesion_mask: Path | None
    marker_mask: Path | None
    split: str
    meta: tuple[tuple[str, Any], ...] = ()


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
    """Weights file of a demo model ("sound", "shortcut", "garbage", "segmentation"); its sidecar
    ``<stem>.json`` lies beside it."""
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
    "shifted_<kind>", "ood")."""
    return list(load_manifest(root).get("splits", {}))


def demo_images(split: str, *, root: Path | None = None) -> list[DemoItem]:
    """The images of one committed split, in manifest order."""
    root = root or demo_root()
    splits = load_manifest(root).get("splits", {})
    if split not in splits:
        raise DemoAssetsError(f"no demo split called '{split}' (available: {', '.join(splits) or 'none'})")
    items = []
    for entry in splits[split]:
        meta = tuple(
            (k, v) for k, v in entry.items() if k not in ("path", "label", "lesion_mask", "marker_mask")
        )
        items.append(
            DemoItem(
                path=root / str(entry["path"]),
                label=entry.get("label"),
                lesion_mask=_resolve(entry.get("lesion_mask"), root),
                marker_mask=_resolve(entry.get("marker_mask"), root),
                split=split,
                meta=meta,
            )
        )
    return items


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
