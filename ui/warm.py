"""Warm a server process before its first browser connects: the imports every page needs, and the cached
results of the views a new session opens on the built-in demo.

``serve.py`` (the README's launch command) runs :func:`warm` in its ``st.App`` lifespan, after Streamlit's
runtime has started and before the server accepts a connection, so the entries land in the same
``st.cache_resource`` / ``st.cache_data`` caches the pages read. Nothing here decides anything: each step
calls the very loader a page calls, with the page's defaults (from :mod:`ui.state`), so a warmed entry is a
cache hit for the page and a step that no longer matches a page merely warms nothing.
"""

from __future__ import annotations

import ast
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ui.loaders import BundleHandle, ImageItem, TargetKey
    from verification.io.records import LoadedModel

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "pages"
log = logging.getLogger(__name__)


@dataclass
class WarmReport:
    """Seconds per step, and the steps that failed (with why): warming never stops the server."""

    steps: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.steps.values())

    def summary(self) -> str:
        parts = [f"{name} {sec:.2f} s" for name, sec in self.steps.items()]
        text = f"warmed in {self.total:.1f} s: " + ", ".join(parts)
        if self.failed:
            text += "; failed: " + ", ".join(f"{k} ({v})" for k, v in self.failed.items())
        return text


@contextmanager
def _step(report: WarmReport, name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    try:
        yield
    except Exception as exc:  # a step that fails leaves that view cold, nothing more
        report.failed[name] = f"{type(exc).__name__}: {exc}"[:200]
        log.warning("warming %s failed", name, exc_info=True)
    finally:
        report.steps[name] = time.perf_counter() - t0


def page_modules(pages: Path = PAGES) -> list[str]:
    """The modules the page files import at their top level (read from their source, not run)."""
    names: set[str] = set()
    for path in sorted(pages.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                # `from ui import figures` imports the submodule ui.figures
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return sorted(names)


def import_page_modules(pages: Path = PAGES) -> list[str]:
    """Import what the pages import; returns the modules that imported (a name that is an attribute, not a
    module, is skipped)."""
    done = []
    for name in page_modules(pages):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        done.append(name)
    return done


def warm(*, full: bool = True, progress: Callable[[str], None] | None = None) -> WarmReport:
    """Fill the process caches for a new session's first views of the built-in demo.

    First the Attention page as it opens (model A, the demo images, the bundle, the first image's maps,
    prediction and evidence; then model B, which the sidebar loads after the page). With ``full`` also: the
    set's verdict (Similarity, Report & export; it also gives every image's evidence on Attention), the
    other images' maps and predictions in batches, model B's verdict and first map (Compare models) and the
    feature check (Feature maps).
    """
    from ui import loaders
    from ui.state import K

    report = WarmReport()

    def done(name: str) -> None:
        if progress is not None:
            progress(f"warm: {name} {report.steps.get(name, 0.0):.2f} s")

    with _step(report, "imports"):
        import_page_modules()
    done("imports")
    a: tuple[LoadedModel, threading.Lock] | None = None
    images: loaders.ImageSet | None = None
    bundle: loaders.BundleHandle | None = None
    with _step(report, "model A"):
        a = loaders.get_model(loaders.demo_spec(K.MODEL_A.demo_name.factory()))
    with _step(report, "images"):
        splits = loaders.demo_splits()
        split = K.IMAGES_SPLIT.factory()
        images = loaders.demo_image_set(split if split in splits else splits[0])
    with _step(report, "bundle"):
        bundle = loaders.demo_bundle(a[0] if a else None)
    if a is None or images is None or not images.items:
        return report
    model, lock = a
    method, faithful = K.METHOD.factory(), K.VERIFY_FAITHFULNESS.factory()
    with _step(report, "first view"):
        attention_view(model, lock, images.items[0], bundle, method=method, faithfulness=faithful)
    done("first view")
    b: tuple[LoadedModel, threading.Lock] | None = None
    if K.MODEL_B_ENABLED.factory():
        with _step(report, "model B"):
            b = loaders.get_model(loaders.demo_spec(K.MODEL_B.demo_name.factory()))
    if not full:
        return report
    if bundle is not None:
        with _step(report, "verdict A"):
            loaders.verify_set(model, lock, bundle, images, faithfulness=faithful)
        done("verdict A")
    with _step(report, "other images"):
        layer, target = _defaults(model, lock)
        rest = [item.image for item in images.items[1:]]
        loaders.precompute_cams(model, lock, rest, layer=layer, target=target)
        if model.task == "classification":
            loaders.precompute_predictions(model, lock, rest)
    done("other images")
    if b is not None:
        with _step(report, "model B views"):
            attention_view(b[0], b[1], images.items[0], None, method=method, faithfulness=faithful)
            if bundle is not None:
                loaders.verify_set(b[0], b[1], bundle, images, faithfulness=faithful)
        done("model B views")
    with _step(report, "feature check"):
        reference = loaders.feature_reference(model, lock)
        loaders.feature_check(model, lock, images)
        loaders.early_activations(model, lock, images.items[0].image, reference)
    done("feature check")
    return report


def _defaults(model: LoadedModel, lock: threading.Lock) -> tuple[str, TargetKey]:
    """The Attention page's default layer and target for ``model``."""
    from ui import loaders

    _, layer = loaders.model_layers(model.content_hash, model, lock)
    return layer, loaders.TargetKey("multilabel" if model.task == "multilabel" else "logit", None)


def attention_view(
    model: LoadedModel,
    lock: threading.Lock,
    item: ImageItem,
    bundle: BundleHandle | None,
    *,
    method: str,
    faithfulness: bool,
) -> None:
    """What the Attention page computes for one image with its default controls (a classifier's)."""
    from ui import loaders

    if model.task == "segmentation":
        return
    layer, target = _defaults(model, lock)
    loaders.cam_for(model, lock, item.image, method=method, layer=layer, target=target)
    if model.task == "classification":
        loaders.prediction(model, lock, item.image)
    if bundle is not None:
        loaders.image_evidence(model, lock, bundle, item, faithfulness=faithfulness)
