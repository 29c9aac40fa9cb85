"""Consistency on your own run (pages/consistency.py, ui/checkpoints.py) with Streamlit's AppTest: an uploaded
zip of checkpoints with their sidecars and an uploaded labelled set; a pickled checkpoint is refused without
the trust tick and nothing in it runs."""

from __future__ import annotations

import gc
import json
import pathlib
import pickle
import weakref
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import DASHBOARD
from tests.builders import zip_bytes
from ui import checkpoints, loaders
from verification import demo
from verification.errors import ModelLoadError
from verification.io import load_image
from verification.uploads import Blob

pytestmark = pytest.mark.usefixtures("navigation_only")


def _checkpoint_zip(indices: tuple[int, ...]) -> bytes:
    paths = demo.demo_checkpoints()
    entries = {}
    for i in indices:
        p = paths[i]
        entries[f"run/{p.name}"] = p.read_bytes()
        entries[f"run/{p.with_suffix('.json').name}"] = p.with_suffix(".json").read_bytes()
    return zip_bytes(entries)


def _labelled_zip(per_class: int = 4) -> bytes:
    entries: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for item in demo.demo_images("test"):
        label = str(item.label)
        if counts.get(label, 0) < per_class:
            counts[label] = counts.get(label, 0) + 1
            entries[f"{label}/{item.path.name}"] = item.path.read_bytes()
    return zip_bytes(entries)


def _app() -> AppTest:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=600).run()
    at.switch_page("pages/consistency.py").run()
    return at


def _own_series(indices: tuple[int, ...], per_class: int) -> AppTest:
    """The page after uploading the demo checkpoints ``indices`` (in that order, one zip) and a labelled zip
    of ``per_class`` test images per class, Grad-CAM only."""
    at = _app()
    at.multiselect(key="consistency_methods").set_value(["gradcam"])
    at.radio(key="consistency_source").set_value("upload").run()
    at.file_uploader(key="consistency_upload").set_value(
        ("run.zip", _checkpoint_zip(indices), "application/zip")
    ).run()
    at.radio(key="consistency_eval").set_value("upload").run()
    at.file_uploader(key="consistency_eval_upload").set_value(
        ("labelled.zip", _labelled_zip(per_class), "application/zip")
    ).run()
    return at


def test_own_checkpoints_and_labelled_set() -> None:
    # uploaded out of order: the page takes them in natural name order (02 before 10)
    at = _own_series((9, 0, 1), per_class=4)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    order = [c.value for c in at.caption if c.value.startswith("Training order")]
    assert order == [
        "Training order (natural name order): sound_ckpt_01 (+sound_ckpt_01.json) → sound_ckpt_02 "
        "(+sound_ckpt_02.json) → sound_ckpt_10 (+sound_ckpt_10.json)"
    ]
    assert any("12 labelled images" in c.value for c in at.caption)
    outcome = [*at.success, *at.warning, *at.info]
    assert any("early warning" in b.value or "drifting" in b.value or "recovered" in b.value for b in outcome)
    assert len(at.get("plotly_chart")) == 2


def test_a_rerun_does_not_read_the_uploads_again(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    real_ckpt, real_eval = checkpoints.checkpoint_files, checkpoints.expand_uploads

    def counting_ckpt(files: list[tuple[str, bytes]]) -> object:
        reads.append("checkpoints")
        return real_ckpt(files)

    def counting_eval(files: list[tuple[str, bytes]]) -> object:
        reads.append("labelled")
        return real_eval(files)

    monkeypatch.setattr(checkpoints, "checkpoint_files", counting_ckpt)
    monkeypatch.setattr(checkpoints, "expand_uploads", counting_eval)
    at = _own_series((0, 1), per_class=2)
    assert not at.exception, [e.value for e in at.exception]
    first = list(reads)
    assert first == ["checkpoints", "labelled"], "each upload read once while the page was set up"
    shown = at.segmented_control(key="consistency_shown")
    shown.set_value(shown.options[0]).run()  # another widget: a rerun with the same uploads
    at.run()
    assert reads == first, "the same uploads were read again on a rerun"
    at.text_input(key="consistency_arch").set_value("resnet18").run()  # a setting that changes the loading
    assert reads.count("checkpoints") == first.count("checkpoints") + 1


def test_a_pickled_checkpoint_is_refused_without_trust_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (pathlib.Path.touch, (str(marker),))

    evil = pickle.dumps(Payload())
    blobs = [Blob("a.pt", evil), Blob("b.pt", evil)]
    found = checkpoints.pair(blobs, architecture="resnet18")
    with pytest.raises(ModelLoadError):
        checkpoints.series(found, loaders.ImageSet("none", ()), ("gradcam",), 0.5, 1.0)
    assert not marker.exists(), "nothing in the pickle ran"

    at = _app()
    at.radio(key="consistency_source").set_value("upload").run()
    at.file_uploader(key="consistency_upload").set_value(
        [("a.pt", evil, "application/octet-stream"), ("b.pt", evil, "application/octet-stream")]
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.error, "the refusal is shown"
    assert not marker.exists()


def test_the_demo_runs_dip_at_checkpoint_5_is_shown_as_recovered_not_drift() -> None:
    """The demo's sound run dips at checkpoint 5 (normal, C-Score 0.11 below checkpoint 4's) and is back at
    checkpoint 6: measured on its own 60 test images, the page calls it a recovered dip, not drift."""
    at = _own_series((3, 4, 5), per_class=20)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning, [w.value for w in at.warning]  # no drift
    recovered = [i.value for i in at.info if i.value.startswith("A dip that recovered, not drift")]
    assert len(recovered) == 1, [i.value for i in at.info]
    assert "sound_ckpt_05: gradcam / normal" in recovered[0]
    assert "recovered at sound_ckpt_06" in recovered[0]
    assert any("1 dip(s) recovered" in s.value for s in at.success)


def _demo_blobs(indices: tuple[int, ...]) -> list[Blob]:
    paths = [demo.demo_checkpoints()[i] for i in indices]
    return [Blob(q.name, q.read_bytes()) for p in paths for q in (p, p.with_suffix(".json"))]


def _labelled_set(per_class: int) -> loaders.ImageSet:
    items: list[loaders.WorkingImage] = []
    for item in demo.demo_images("test"):
        if sum(i.label == str(item.label) for i in items) < per_class:
            items.append(loaders.WorkingImage(load_image(item.path), str(item.label)))
    return loaders.ImageSet("labelled", tuple(items))


def test_the_series_loads_one_checkpoint_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to 50 uploads of up to 1 GiB of weights each: never all in memory. When a checkpoint is loaded, at
    most two earlier ones are alive: the first (in the model cache) and the one measured just before."""
    loaded: list[weakref.ref[object]] = []
    alive_at_load: list[int] = []
    real = loaders.load_spec

    def tracking(spec: loaders.ModelChoice) -> object:
        gc.collect()
        alive_at_load.append(sum(r() is not None for r in loaded))
        model = real(spec)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(loaders, "load_spec", tracking)
    loaders._cached_model.clear()
    found = checkpoints.pair(_demo_blobs((0, 1, 2, 3, 4)))
    result = checkpoints.series(found, _labelled_set(2), ("gradcam",), 0.5, 1.0)
    assert [c.name for c in result.checkpoints] == [c.name for c in found]
    assert len(alive_at_load) == 5, "each checkpoint loaded once"
    assert max(alive_at_load) <= 2, alive_at_load  # all at once would give [0, 1, 2, 3, 4]
    # the series is cached by content: a rerun loads nothing
    checkpoints.series(found, _labelled_set(2), ("gradcam",), 0.5, 1.0)
    assert len(alive_at_load) == 5


def test_a_checkpoint_with_other_classes_is_refused_when_the_series_reaches_it() -> None:
    blobs = _demo_blobs((0, 1))
    side = json.loads(blobs[3].data)
    side["class_names"] = ["normal", "effusion", "nodule"]
    blobs[3] = Blob(blobs[3].name, json.dumps(side).encode())
    found = checkpoints.pair(blobs)
    with pytest.raises(ModelLoadError, match="checkpoint 'sound_ckpt_02' has classes"):
        checkpoints.series(found, _labelled_set(2), ("gradcam",), 0.5, 1.0)
