"""Warm a server process before its first browser connects: the imports every page needs, and the cached
results of the views a new session opens on the built-in demo.

``ui/serve.py`` (the README's launch command) runs :func:`warm_first` in its ``st.App`` lifespan, after
Streamlit's runtime has started and before the server accepts a connection, so the entries land in the same
``st.cache_resource`` / ``st.cache_data`` caches the pages read; :func:`warm_rest` then runs in a background
thread while the server already serves (torch work there takes the model's lock per batch, so a session's own
request waits for one batch at most) and only while no reader is using the server (:data:`ACTIVITY`: it waits
before each step until no script run is in progress and no request has come for a moment, so a reader's page
load never competes with it for the cores and the interpreter lock). Nothing here decides anything: each step
calls the very loader a page calls, with the page's defaults (from :mod:`ui.state`), so a warmed entry is a
cache hit for the page, and a step that no longer matches a page merely warms nothing
(``tests/app/test_speed.py`` checks that the first Attention view computes nothing after :func:`warm_first`).
"""

from __future__ import annotations

import ast
import gc
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
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    from ui.loaders import BundleHandle, ImageSet, TargetKey, WorkingImage
    from verification.io.records import LoadedModel

ROOT = Path(__file__).resolve().parents[1]
PAGES = ROOT / "pages"
log = logging.getLogger(__name__)


@dataclass
class WarmReport:
    """Seconds per step, and the steps that failed (with why): warming never stops the server."""

    steps: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    waited: float = 0.0  # seconds spent waiting for readers between steps (not in ``steps``)

    @property
    def total(self) -> float:
        return sum(self.steps.values())

    def summary(self) -> str:
        parts = [f"{name} {sec:.2f} s" for name, sec in self.steps.items()]
        text = f"warmed in {self.total:.1f} s: " + ", ".join(parts)
        if self.waited:
            text += f" (after waiting {self.waited:.1f} s for readers)"
        if self.failed:
            text += "; failed: " + ", ".join(f"{k} ({v})" for k, v in self.failed.items())
        return text


@contextmanager
def _step(report: WarmReport, name: str, wait: Callable[[], float] | None = None) -> Iterator[None]:
    if wait is not None:
        report.waited += wait()
    t0 = time.perf_counter()
    try:
        yield
    except Exception as exc:  # a step that fails leaves that view cold, nothing more
        report.failed[name] = f"{type(exc).__name__}: {exc}"[:200]
        log.warning("warming %s failed", name, exc_info=True)
    finally:
        report.steps[name] = time.perf_counter() - t0


class Activity:
    """Whether readers are using this server now: the script runs in progress, and when the last one ended or
    the last request (page, scripts, pictures, websocket message) came. The background warm stage waits for a
    quiet moment before each step, so it runs in the gaps between what readers do."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs = 0
        self._last = time.monotonic()

    def touch(self) -> None:
        """A request came (called by ``ui/serve.py``'s middleware)."""
        with self._cond:
            self._last = time.monotonic()

    @contextmanager
    def run(self) -> Iterator[None]:
        """A script run of a session (``dashboard.py`` wraps each run in it)."""
        with self._cond:
            self._runs += 1
            self._last = time.monotonic()
        try:
            yield
        finally:
            with self._cond:
                self._runs -= 1
                self._last = time.monotonic()
                self._cond.notify_all()

    def wait_idle(self, quiet_s: float, *, max_wait_s: float) -> float:
        """Block until no run is in progress and nothing came for ``quiet_s`` seconds (at most
        ``max_wait_s``: a reader busy without pause does not hold warming off for ever); returns the
        seconds waited."""
        t0 = time.monotonic()
        with self._cond:
            while True:
                now = time.monotonic()
                if now - t0 >= max_wait_s:
                    break
                if self._runs == 0 and now - self._last >= quiet_s:
                    break
                left = quiet_s - (now - self._last) if self._runs == 0 else quiet_s
                self._cond.wait(timeout=min(max(left, 0.01), max_wait_s - (now - t0)))
        return time.monotonic() - t0


ACTIVITY = Activity()
# Before each background step: no run for this long and no request (a page's scripts and pictures come in
# bursts well under a second apart while it loads), at most this long in all per step.
QUIET_S = 1.0
MAX_WAIT_S = 60.0


def wait_for_readers() -> float:
    """:meth:`Activity.wait_idle` with the launcher's settings (the ``wait`` of :func:`warm_rest`)."""
    return ACTIVITY.wait_idle(QUIET_S, max_wait_s=MAX_WAIT_S)


_FROZEN = threading.Event()


def freeze_heap() -> None:
    """Move every object alive now (modules, models, cached results: hundreds of thousands) out of the
    garbage collector's sight. Streamlit runs ``gc.collect(2)`` after every script run (runner.postScriptGC);
    with the demo loaded (about 475,000 tracked objects) that took 0.27–0.53 s on our 2 busy cores and held
    the interpreter lock while the browser fetched the run's pictures; after a freeze, under a millisecond
    (measured the same way; a bare process after warm_first and warm_rest: 556,000 objects, 0.33 s, then under
    a millisecond, load ~1.5). Objects stay freed by
    reference counting; only reference cycles among frozen objects are never collected."""
    gc.collect()
    gc.freeze()
    _FROZEN.set()


def freeze_heap_once() -> None:
    """:func:`freeze_heap` the first time a script run ends in this process (for ``streamlit run
    dashboard.py``, where no warm start ran)."""
    if not _FROZEN.is_set():
        freeze_heap()


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


def compile_scripts() -> list[str]:
    """Inside a running server: compile ``dashboard.py`` and the pages into Streamlit's script cache (a page's
    first run in a process otherwise parses, rewrites and compiles it: 57 ms for the Attention page), and let
    Streamlit make its once-per-process check whether it runs in a REPL (``inspect.stack()``, which reads the
    source of every frame: 80 ms of the first run; both measured in the first run of a warmed server, load
    ~3). Returns the scripts compiled; none outside a server (no runtime)."""
    from streamlit import delta_generator
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return []
    delta_generator._maybe_print_use_warning()  # with a runtime: only the check, nothing printed
    cache = Runtime.instance()._script_cache
    done = []
    for path in [ROOT / "dashboard.py", *sorted(PAGES.glob("*.py"))]:
        cache.get_bytecode(str(path))
        done.append(path.name)
    return done


def refill_on_clear(cache: ScriptCache, refill: Callable[[], object] = compile_scripts) -> None:
    """Make ``cache`` (Streamlit's script cache) compiled again right after every clear, in a thread.

    Streamlit empties it when the last session disconnects (so that edited files are read afresh), and the
    next new session on a warm server then parses, rewrites and compiles ``dashboard.py`` and its page
    before drawing anything (0.10–0.11 s of a 0.28 s first run of the Attention page, load ~3.5; the first
    session of a fresh server found them compiled by :func:`compile_scripts`). With the refill, the files
    are still read afresh after every clear, when the last reader leaves rather than when the next comes."""
    clear = cache.clear

    def clear_and_refill() -> None:
        clear()
        threading.Thread(target=refill, name="script-cache-refill", daemon=True).start()

    cache.clear = clear_and_refill  # type: ignore[method-assign]


def keep_scripts_compiled() -> bool:
    """:func:`refill_on_clear` on the running server's script cache; False outside a server."""
    from streamlit.runtime import Runtime

    if not Runtime.exists():
        return False
    refill_on_clear(Runtime.instance()._script_cache)
    return True


@dataclass
class Warmed:
    """What the first stage loaded, for the second."""

    model: LoadedModel
    lock: threading.Lock
    images: ImageSet
    bundle: BundleHandle | None
    model_b: tuple[LoadedModel, threading.Lock] | None


def warm_first(report: WarmReport) -> Warmed | None:
    """The Attention page as a new session opens it: what the pages import, model A, the demo images, the
    bundle, the first image's map, prediction and evidence (and model B when the sidebar enables it by
    default). None when the demo is missing (nothing else to warm)."""
    from ui import loaders
    from ui.state import K

    with _step(report, "imports"):
        import_page_modules()
    with _step(report, "scripts"):
        compile_scripts()
        keep_scripts_compiled()
    a: tuple[LoadedModel, threading.Lock] | None = None
    images: ImageSet | None = None
    bundle: BundleHandle | None = None
    with _step(report, "model A"):
        a = loaders.get_model(loaders.demo_spec(K.MODEL_A.demo_name.factory()))
    with _step(report, "images"):
        splits = loaders.demo_splits()
        split = K.IMAGES_SPLIT.factory()
        images = loaders.demo_image_set(split if split in splits else splits[0])
    with _step(report, "bundle"):
        bundle = loaders.demo_bundle(a[0] if a else None)
    if a is None or images is None or not images.items:
        return None
    model, lock = a
    with _step(report, "first view"):
        attention_view(
            model,
            lock,
            images.items[0],
            bundle,
            method=K.METHOD.factory(),
            faithfulness=K.VERIFY_FAITHFULNESS.factory(),
        )
    b: tuple[LoadedModel, threading.Lock] | None = None
    if K.MODEL_B_ENABLED.factory():
        with _step(report, "model B"):
            b = loaders.get_model(loaders.demo_spec(K.MODEL_B.demo_name.factory()))
    return Warmed(model, lock, images, bundle, b)


def warm_rest(warmed: Warmed, report: WarmReport, wait: Callable[[], float] | None = None) -> None:
    """The other views a session reaches next: the compiled metric kernels, the set's verdict (Similarity,
    Report & export; it also gives every image's evidence on Attention), the other
    images' maps and predictions in batches, the feature check (Feature maps), the demo checkpoint series
    (Consistency), model B's views when B is on. ``wait`` runs before each step (the launcher's
    :func:`wait_for_readers`)."""
    from ui import loaders
    from ui.state import K

    model, lock, images, bundle = warmed.model, warmed.lock, warmed.images, warmed.bundle
    faithful = K.VERIFY_FAITHFULNESS.factory()
    with _step(report, "metric kernels", wait):
        warm_metric_kernels()
    if bundle is not None:
        with _step(report, "verdict A", wait):
            loaders.verify_set(model, lock, bundle, images, faithfulness=faithful)
    with _step(report, "other images", wait):
        layer, target = _defaults(model, lock)
        rest = [item.image for item in images.items[1:]]
        loaders.precompute_cams(model, lock, rest, layer=layer, target=target)
        if model.task == "classification":
            loaders.precompute_predictions(model, lock, rest)
    with _step(report, "feature check", wait):
        reference = loaders.feature_reference(model, lock)
        loaders.feature_check(model, lock, images)
        loaders.early_activations(model, lock, images.items[0].image, reference)
    if warmed.model_b is not None:
        b, b_lock = warmed.model_b
        with _step(report, "model B views", wait):
            attention_view(b, b_lock, images.items[0], None, method=K.METHOD.factory(), faithfulness=faithful)
            if bundle is not None:
                loaders.verify_set(b, b_lock, bundle, images, faithfulness=faithful)
    with _step(report, "consistency", wait):
        loaders.demo_checkpoint_series(
            loaders.labelled_or_demo(images),
            loaders.checkpoint_class_names(),
            K.CONSISTENCY_METHODS.factory(),
            K.CONSISTENCY_TAU.factory(),
            K.CONSISTENCY_GAMMA.factory(),
        )


def warm_metric_kernels() -> None:
    """Compile (or load from numba's on-disk cache) the compiled metric kernels, the spatial Wasserstein's
    included, for both threshold kinds on float32 maps at a native grid: the first drawn region or verdict
    of a session then does not wait for a compiler (this function in a new process, load ~1.5 on 2 cores:
    13.8 s with an empty numba cache, 1.9 s from the cache, imports included)."""
    import numpy as np

    from verification.metrics import compute_metrics

    rng = np.random.default_rng(0)
    maps, refs = (rng.random((2, 32, 32), dtype=np.float32) for _ in range(2))
    compute_metrics(maps, refs, threshold="otsu", size=None)
    compute_metrics(maps, refs, size=None)


def warm(*, full: bool = True) -> WarmReport:
    """Both stages, one after the other (``full=False``: the first only)."""
    report = WarmReport()
    warmed = warm_first(report)
    if full and warmed is not None:
        warm_rest(warmed, report)
    return report


def _defaults(model: LoadedModel, lock: threading.Lock) -> tuple[str, TargetKey]:
    """The Attention page's default layer and target for ``model``."""
    from ui import loaders

    _, layer = loaders.model_layers(model.content_hash, model, lock)
    return layer, loaders.TargetKey("multilabel" if model.task == "multilabel" else "logit", None)


def attention_view(
    model: LoadedModel,
    lock: threading.Lock,
    item: WorkingImage,
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
