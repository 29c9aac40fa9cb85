"""The warm start and the per-image stores that make the dashboard fast (no timings asserted here; those are
``bench/dashboard.py``'s): what is reused must equal what would have been computed, and the warm launcher
must actually warm before it serves."""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from tests.app.browser_harness import server_log, streamlit_server
from tests.app.conftest import DASHBOARD
from ui import loaders, warm
from verification.cam.records import CamResult
from verification.io.records import LoadedImage, LoadedModel

pytestmark = pytest.mark.usefixtures("navigation_only")


@pytest.fixture
def cold_caches() -> None:
    st.cache_data.clear()
    st.cache_resource.clear()
    loaders.clear_stores()


def _sound() -> tuple[loaders.ImageSet, LoadedModel, threading.Lock, loaders.BundleHandle]:
    model, lock = loaders.get_model(loaders.demo_spec("sound"))
    test = loaders.demo_image_set("test")
    ood = loaders.demo_image_set("ood")
    items = (*test.items[:4], *ood.items[:2])  # labelled chest films and out-of-distribution pictures
    return loaders.ImageSet("mixed", items), model, lock, loaders.demo_bundle(model)


def test_image_evidence_from_a_set_verdict_equals_a_one_image_verify(cold_caches: None) -> None:
    images, model, lock, bundle = _sound()
    loaders.verify_set(model, lock, bundle, images)  # fills the per-image store
    assert len(loaders._EVIDENCE) == len(images.items)
    for item in (images.items[0], images.items[3], images.items[-1]):
        kept = loaders.image_evidence(model, lock, bundle, item)
        alone = loaders.verify_items(model, lock, bundle, [item]).images[0]
        assert kept is not None
        assert (kept.name, kept.label, kept.predicted, kept.assessable) == (
            alone.name,
            alone.label,
            alone.predicted,
            alone.assessable,
        )
        assert kept.not_assessable_reason == alone.not_assessable_reason
        assert kept.why == alone.why
        assert kept.values.keys() == alone.values.keys()
        for key, value in alone.values.items():
            if value is None:
                assert kept.values[key] is None, key
            else:
                assert kept.values[key] == pytest.approx(value, abs=1e-5), key
        np.testing.assert_allclose(kept.probabilities, alone.probabilities, atol=1e-5)
    ood = [loaders.image_evidence(model, lock, bundle, it) for it in images.items[-2:]]
    assert any(ev is not None and not ev.assessable for ev in ood)


def test_batched_maps_and_predictions_equal_one_image_passes(cold_caches: None) -> None:
    images, model, lock, _ = _sound()
    shown = [item.image for item in images.items[:3]]
    layer = loaders.model_layers(model.content_hash, model, lock)[1]
    target = loaders.TargetKey()

    def maps(image: LoadedImage) -> dict[str, CamResult]:
        key = (model.content_hash, image.content_hash, layer, target)
        return loaders.one_pass_cams(*key, model, lock, image)

    assert loaders.precompute_cams(model, lock, shown, layer=layer, target=target, batch_size=2) == 3
    assert loaders.precompute_predictions(model, lock, shown, batch_size=2) == 3
    kept = [(maps(im), loaders.prediction(model, lock, im)) for im in shown]
    assert len(loaders._PRECOMPUTED_CAMS) == len(loaders._PRECOMPUTED_PREDICTIONS) == 0  # all taken
    st.cache_data.clear()
    for image, (kept_maps, kept_pred) in zip(shown, kept):
        alone, pred = maps(image), loaders.prediction(model, lock, image)
        assert kept_maps.keys() == alone.keys()
        for name, res in alone.items():
            mine = kept_maps[name]
            assert mine.maps.shape == res.maps.shape == (1, *model.input_size)
            assert mine.targets == res.targets
            np.testing.assert_allclose(mine.maps, res.maps, atol=1e-4, err_msg=name)
            np.testing.assert_allclose(mine.probs, res.probs, atol=1e-5, err_msg=name)
        assert (kept_pred.index, kept_pred.class_index, kept_pred.rejected) == (
            pred.index,
            pred.class_index,
            pred.rejected,
        )
        assert kept_pred.confidence == pytest.approx(pred.confidence, abs=1e-5)


def test_after_warming_the_first_attention_view_computes_nothing(
    cold_caches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    report = warm.warm(full=False)
    assert not report.failed, report.failed
    assert {"imports", "model A", "images", "bundle", "first view"} <= report.steps.keys()
    calls: list[str] = []

    def counting(name: str, fn: object) -> object:
        def wrapped(*args: object, **kwargs: object) -> object:
            calls.append(name)
            return fn(*args, **kwargs)  # type: ignore[operator]

        return wrapped

    for name in ("compute_cams", "load_model", "verify", "predict"):
        monkeypatch.setattr(loaders, name, counting(name, getattr(loaders, name)))
    at = AppTest.from_file(str(DASHBOARD), default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.title[0].value == "Attention"
    assert calls == [], f"the first view recomputed {calls} after warming"


def test_page_modules_are_what_the_pages_import() -> None:
    names = warm.page_modules()
    assert {"streamlit", "ui.loaders", "ui.sidebar", "ui.state"} <= set(names)
    assert all(not name.startswith(".") for name in names)
    assert "ui.loaders" in warm.import_page_modules()


def test_the_script_cache_is_compiled_again_after_streamlit_clears_it(tmp_path: Path) -> None:
    """Streamlit clears its script cache when the last session leaves; the warm launcher refills it at once
    (from the files as they are then), so the next new session does not compile the scripts itself."""
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache

    script = tmp_path / "page.py"
    script.write_text("x = 1\n")
    cache = ScriptCache()
    refilled = threading.Event()

    def refill() -> None:
        cache.get_bytecode(str(script))
        refilled.set()

    warm.refill_on_clear(cache, refill)
    first = cache.get_bytecode(str(script))
    script.write_text("x = 2\n")  # an edit made while readers were connected
    cache.clear()
    assert refilled.wait(10), "refilled after the clear"
    again = cache._cache[str(script)]  # compiled by the refill, not by a reader's get_bytecode
    assert again is not first
    scope: dict[str, object] = {}
    exec(again, scope)
    assert scope["x"] == 2, "the files are read afresh after a clear"


def test_the_warm_launcher_warms_before_it_answers() -> None:
    """``streamlit run ui/serve.py`` (the README's command): the health endpoint answers only after the warm
    start has run, and the first view's steps all succeeded."""
    with streamlit_server(script="ui/serve.py", timeout=300, env={"VERIFICATION_WARM": "first"}) as url:
        text = server_log(url).read_text()
        assert "warmed in" in text, text  # printed by the lifespan hook before the server accepted
        assert "failed:" not in text, text
        assert "first view" in text
        with urllib.request.urlopen(f"{url}/", timeout=10) as r:
            assert r.status == 200
        with urllib.request.urlopen(f"{url}/api/warm", timeout=10) as r:
            status = json.load(r)
        assert status["mode"] == "first", status
        assert status["done"], status
        assert "first view" in status["first"]["steps"], status
        assert not status["first"]["failed"], status


def test_the_gate_is_reused_only_while_the_model_and_thumbnails_are_the_same(cold_caches: None) -> None:
    import torch

    from verification.verdict import gate

    _, model, _, bundle = _sound()
    thumbs = bundle.bundle.thumbnails
    assert thumbs is not None
    first = gate.build_gate(model, thumbs)
    assert gate.build_gate(model, thumbs.copy()) is first  # same content, another array
    assert gate.build_gate(model, thumbs[:-1]) is not first  # other thumbnails
    param = next(model.module.parameters())
    saved = param.detach().clone()
    try:
        with torch.no_grad():
            param.mul_(1.5)  # weights changed in place: the gate is rebuilt
        changed = gate.build_gate(model, thumbs)
        assert changed is not first
        assert not np.allclose(_scores(changed), _scores(first))
    finally:
        with torch.no_grad():
            param.copy_(saved)
    again = gate._build_gate(model, thumbs)  # built afresh equals the reused one
    np.testing.assert_allclose(_scores(again), _scores(first), rtol=1e-6)
    assert again.feature_max == pytest.approx(first.feature_max)
    assert again.stats_max == pytest.approx(first.stats_max)


def _scores(g: object) -> np.ndarray:
    from verification.features import FeatureReference

    ref = getattr(g, "feature", None)
    assert isinstance(ref, FeatureReference)
    return ref.calib_scores


def test_the_metric_warm_up_compiles_every_kernel_a_drawn_region_uses() -> None:
    """The background warm stage compiles (or loads) the numba kernels of the seven metrics, Otsu thresholds
    and the spatial Wasserstein included, so no reader's first drawn region waits for a compiler."""
    import numba

    from verification.metrics import grid_flow, kernels

    warm.warm_metric_kernels()
    dispatchers = {
        name: obj
        for module in (kernels, grid_flow)
        for name, obj in vars(module).items()
        if isinstance(obj, numba.core.registry.CPUDispatcher)
    }
    assert {"overlap_counts", "ssim_means", "unit_histograms", "kl_ratios"} <= dispatchers.keys()
    used = [name for name, d in dispatchers.items() if d.signatures]
    assert {"overlap_counts", "ssim_means", "unit_histograms", "kl_ratios"} <= set(used), used
    assert any(name.startswith("_solve") for name in used), used  # the Wasserstein solver
