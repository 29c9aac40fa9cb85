"""C-Score, AUC and checkpoint tracking against hand-derived cases, a naive loop and scikit-learn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from tests.builders import loaded_model
from verification.consistency import (
    CheckpointSeries,
    binary_auc,
    c_score,
    consistency_report,
    detect_early_warnings,
    gold_list,
    ovr_auc,
    pairwise_sum_min,
    prepare_maps,
    series_mismatch,
    soft_iou_matrix,
    track_checkpoints,
)
from verification.consistency.cscore import _unrank_pairs
from verification.io.records import LoadedModel


def naive_c_score(maps: np.ndarray, p: np.ndarray, gamma: float = 2.0, eps: float = 1e-8) -> float:
    """Independent reference: a plain double loop over pairs in float64, straight from METHODS.md §4."""
    prepared = []
    for m in maps.astype(np.float64):
        lo, hi = m.min(), m.max()
        prepared.append(((m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)) ** gamma)
    num = den = 0.0
    for i in range(len(maps)):
        for j in range(i + 1, len(maps)):
            a, b = prepared[i], prepared[j]
            iou = np.minimum(a, b).sum() / (np.maximum(a, b).sum() + eps)
            num += p[i] * p[j] * iou
            den += p[i] * p[j]
    return num / den


def test_identical_maps_score_one() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((8, 8))
    res = c_score(np.stack([m, m, m]), [0.95, 0.99, 0.91])
    assert res.status == "ok"
    assert res.score == pytest.approx(1.0, abs=1e-6)
    assert res.n_pairs == 3


def test_disjoint_maps_score_zero() -> None:
    maps = np.zeros((3, 4, 4))
    maps[0, 0, :] = 1
    maps[1, 1, :] = 1
    maps[2, 2:, :] = 1
    assert c_score(maps, [1.0, 1.0, 1.0]).score == 0.0


def test_confidence_weights_three_maps_by_hand() -> None:
    # a, b overlap with soft IoU 1/2; c is disjoint from both (IoU 0); values 0/1 survive min-max and γ.
    maps = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1]], dtype=np.float32)
    equal = c_score(maps, [1.0, 1.0, 1.0], eps=0.0).score
    assert equal == pytest.approx(0.5 / 3)
    p = np.array([0.9, 1.0, 0.95])
    # weights: ab 0.9, ac 0.855, bc 0.95 → 0.9 * 0.5 / 2.705
    assert c_score(maps, p, eps=0.0).score == pytest.approx(0.45 / 2.705, rel=1e-12)
    # more confidence on the odd one out pulls the mean down; on the agreeing pair pushes it up
    assert c_score(maps, [1.0, 1.0, 2.0], eps=0.0).score < equal
    assert c_score(maps, [2.0, 2.0, 1.0], eps=0.0).score > equal


def test_gamma_emphasises_intensity() -> None:
    maps = np.array([[1.0, 0.5, 0.0], [1.0, 1.0, 0.0]])
    # γ = 2: a = (1, .25, 0), b = (1, 1, 0): Σmin 1.25, Σmax 2
    assert c_score(maps, [1, 1], eps=0.0).score == pytest.approx(0.625)
    # γ = 1: Σmin 1.5, Σmax 2
    assert c_score(maps, [1, 1], gamma=1.0, eps=0.0).score == pytest.approx(0.75)


def test_collapsed_gold_list_is_nan_with_reason() -> None:
    for n in (0, 1):
        res = c_score(np.zeros((n, 4, 4)), np.ones(n))
        assert math.isnan(res.score)
        assert res.status == "collapsed"
        assert res.reason is not None
        assert "collapsed" in res.reason
        assert res.n_gold == n


def test_constant_map_normalises_to_zero() -> None:
    x = prepare_maps(np.stack([np.full((3, 3), 0.7), np.eye(3)]))
    assert (x[0] == 0).all()
    assert c_score(np.stack([np.full((3, 3), 0.7), np.eye(3)]), [1, 1]).n_constant == 1


@pytest.mark.parametrize("backend", ["scipy", "torch"])
def test_vectorised_equals_naive_loop(backend: str) -> None:
    rng = np.random.default_rng(1)
    maps = rng.random((13, 17, 11)) ** 3
    p = rng.uniform(0.9, 1.0, 13)
    fast = c_score(maps, p, backend=backend).score  # type: ignore[arg-type]
    assert fast == pytest.approx(naive_c_score(maps, p), abs=1e-6)
    m = soft_iou_matrix(maps, backend=backend)  # type: ignore[arg-type]
    assert np.allclose(m, m.T)


@pytest.mark.slow
def test_compiled_backend_equals_naive_loop() -> None:
    pytest.importorskip("torch._inductor")
    rng = np.random.default_rng(2)
    x = prepare_maps(rng.random((20, 30, 30)))
    ref = pairwise_sum_min(x, backend="scipy")
    try:
        got = pairwise_sum_min(x, backend="compiled")
    except Exception as exc:  # no C++ toolchain on this machine: the compiled backend cannot run here
        pytest.skip(f"torch.compile unavailable: {exc}")
    assert np.allclose(got, ref, rtol=1e-5, atol=1e-3)


def test_sum_min_chunks_and_blocks_cover_everything() -> None:
    # more rows than one row block and more pixels than one pixel chunk
    rng = np.random.default_rng(3)
    x = rng.random((70, 8200)).astype(np.float32)
    got = pairwise_sum_min(x, n_threads=2)
    idx = [(0, 69), (5, 64), (63, 64), (10, 10)]
    for i, j in idx:
        assert got[i, j] == pytest.approx(np.minimum(x[i], x[j]).astype(np.float64).sum(), rel=1e-9)
        assert got[j, i] == got[i, j]


def test_unrank_pairs_matches_triu() -> None:
    for n in (2, 3, 7, 50):
        ii, jj = np.triu_indices(n, k=1)
        gi, gj = _unrank_pairs(np.arange(len(ii)), n)
        assert (gi == ii).all()
        assert (gj == jj).all()


def test_pair_sampling_is_seeded_and_only_above_threshold() -> None:
    rng = np.random.default_rng(4)
    maps = rng.random((30, 8, 8))
    p = np.ones(30)
    exact = c_score(maps, p)
    assert not exact.sampled
    assert exact.n_pairs == 435
    not_needed = c_score(maps, p, max_pairs=435)
    assert not not_needed.sampled
    a = c_score(maps, p, max_pairs=200, seed=7)
    b = c_score(maps, p, max_pairs=200, seed=7)
    assert a.sampled
    assert a.n_pairs == 200
    assert a.seed == 7
    assert a.score == b.score
    assert a.score == pytest.approx(exact.score, abs=0.02)


def test_gold_list_filters_label_prediction_and_confidence() -> None:
    labels = np.array([0, 0, 0, 1, 0])
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.2, 0.8], [0.95, 0.05], [0.9, 0.1]])
    assert gold_list(labels, probs, 0).tolist() == [0, 4]
    assert gold_list(labels, probs, 0, tau=0.5).tolist() == [0, 1, 4]


def test_report_per_class_macro_and_weighted() -> None:
    rng = np.random.default_rng(5)
    base = [rng.random((6, 6)) for _ in range(3)]
    maps = np.stack([base[0], base[0], base[0], base[1], np.roll(base[1], 3), base[2]])
    labels = [0, 0, 0, 1, 1, 2]
    probs = np.tile(np.eye(3) * 0.96 + 0.02 / 1, (1, 1))[labels]
    rep = consistency_report(maps, labels, probs, method="gradcam", class_names=["a", "b", "c"])
    scores = {c.class_name: c for c in rep.classes}
    assert scores["a"].score == pytest.approx(1.0, abs=1e-6)
    assert scores["a"].n_gold == 3
    assert 0 < scores["b"].score < 1
    assert scores["b"].n_gold == 2
    assert scores["c"].status == "collapsed"
    assert math.isnan(scores["c"].score)
    assert rep.n_collapsed == 1
    assert rep.macro_mean == pytest.approx((scores["a"].score + scores["b"].score) / 2)
    assert rep.weighted_mean == pytest.approx((3 * scores["a"].score + 2 * scores["b"].score) / 5)
    assert "1 collapsed" in rep.summary()
    json.dumps(rep.to_dict(), allow_nan=False)


def test_binary_auc_matches_sklearn_with_ties() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    assert binary_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert math.isnan(binary_auc(np.ones(5), np.arange(5)))


def test_ovr_auc_matches_sklearn() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + 1.5 * np.eye(4)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    macro, per = ovr_auc(y, probs)
    assert macro == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"), abs=1e-12)
    for c in range(4):
        assert per[c] == pytest.approx(roc_auc_score(y == c, probs[:, c]), abs=1e-12)
    yb = (y > 1).astype(int)
    pb = np.stack([1 - probs[:, 0], probs[:, 0]], 1)
    assert ovr_auc(yb, pb)[0] == pytest.approx(roc_auc_score(yb, pb[:, 1]), abs=1e-12)


def test_early_warning_on_synthetic_series() -> None:
    names = ["e1", "e2", "e3", "e4", "e5"]
    auc = [0.80, 0.90, 0.91, 0.905, 0.70]
    scores = {
        ("gradcam", "nodule"): [0.5, 0.7, 0.65, 0.55, 0.3],  # falls 0.15 at e4 with AUC holding
        ("gradcam", "normal"): [0.6, 0.62, 0.61, 0.6, 0.59],  # stable: never warns
        ("hirescam", "nodule"): [0.5, math.nan, 0.7, math.nan, 0.4],  # collapse at e4 after a valid best
    }
    warns = detect_early_warnings(names, auc, scores, drop=0.1, auc_tolerance=0.02)
    got = [(w.checkpoint, w.method, w.class_name, w.kind) for w in warns]
    # e2: AUC rose 0.10 from e1, so e1 is no yardstick (no warning, even for the NaN); e4: AUC within 0.02 of
    # e2 and e3 → the drop from e2's 0.7 and the collapse after e3's 0.7 warn; e5: AUC dropped → no warning
    assert got == [
        ("e4", "gradcam", "nodule", "c_score_drop"),
        ("e4", "hirescam", "nodule", "collapsed"),
    ]
    w = warns[0]
    assert w.best_checkpoint == "e2"
    assert w.drop == pytest.approx(0.15)
    assert w.auc_at_best == 0.90
    assert "while AUC holds" in w.message()
    # a drop of exactly the threshold is not "more than" it
    assert not detect_early_warnings(["a", "b"], [0.9, 0.9], {("m", "c"): [0.5, 0.4]}, drop=0.1 + 1e-12)


class _TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.features(x))).flatten(1))


def _loaded(module: nn.Module, name: str) -> LoadedModel:
    return loaded_model(module, name=name)


def test_track_checkpoints_with_stand_in_cams() -> None:
    """Stand-in CAM engine whose maps and probabilities are set per checkpoint: checkpoint 2 keeps its
    predictions (AUC unchanged) but scatters the attention of class 1 → an early warning there only."""
    n = 8
    labels = np.array([0, 1] * (n // 2))
    rng = np.random.default_rng(8)
    blob = np.zeros((16, 16), np.float32)
    blob[4:9, 4:9] = 1

    class Res:
        def __init__(self, method: str, maps: np.ndarray, probs: np.ndarray) -> None:
            self.method, self.maps, self.probs = method, maps, probs

    def cam_fn(model: LoadedModel, x: torch.Tensor, *, methods: tuple[str, ...], layers: object) -> list[Res]:
        idx = x[:, 0, 0, 0].long().numpy()
        probs = np.where(labels[idx, None] == np.arange(2), 0.95, 0.05)
        maps = np.stack([blob] * len(idx))
        if model.name == "ep2":
            for k, i in enumerate(idx):
                if labels[i] == 1:
                    maps[k] = rng.random((16, 16)).astype(np.float32)
        return [Res(m, maps, probs) for m in methods]

    x = torch.arange(n, dtype=torch.float32)[:, None, None, None].expand(n, 1, 16, 16).contiguous()
    ckpts = [_loaded(_TinyNet(), f"ep{i}") for i in range(3)]
    series = track_checkpoints(
        ckpts, x, labels, methods=("gradcam", "hirescam"), batch_size=3, cam_fn=cam_fn, drop=0.2
    )
    assert [s.auc for s in series.checkpoints] == [1.0, 1.0, 1.0]
    assert [s.accuracy for s in series.checkpoints] == [1.0, 1.0, 1.0]
    assert {(w.checkpoint, w.method, w.class_name) for w in series.warnings} == {
        ("ep2", "gradcam", "nodule"),
        ("ep2", "hirescam", "nodule"),
    }
    frame = series.to_frame()
    assert len(frame) == 3 * 2 * 2
    assert set(frame.columns) >= {"checkpoint", "auc", "accuracy", "method", "class", "c_score", "warning"}
    table = series.table()
    assert list(table["checkpoint"]) == ["ep0", "ep1", "ep2"]
    assert table.loc[0, "C[gradcam/normal]"] == pytest.approx(1.0, abs=1e-6)
    again = CheckpointSeries.from_dict(json.loads(series.to_json()))
    assert again.warnings == series.warnings
    assert again.to_frame().equals(series.to_frame())


def test_track_checkpoints_with_real_cam_engine(tmp_path: object) -> None:
    torch.manual_seed(0)
    x = torch.rand(6, 1, 16, 16)
    labels = [0, 1, 0, 1, 0, 1]
    ckpts = [_loaded(_TinyNet(), f"ep{i}") for i in range(2)]
    series = track_checkpoints(ckpts, x, labels, methods=("gradcam", "layercam"), tau=0.0)
    assert len(series.rows) == 2 * 2 * 2
    for r in series.rows:
        assert r.status == "collapsed" or 0.0 <= r.c_score <= 1.0
    path = series.to_csv(tmp_path / "series.csv", wide=True)  # type: ignore[operator]
    assert path.read_text().startswith("checkpoint,auc,accuracy")


def test_no_warning_against_a_half_trained_model() -> None:
    """Generic maps early in training score high; a competent model's lower C-Score is not a warning."""
    names = ["e1", "e2", "e3"]
    auc = [0.70, 0.99, 1.00]
    scores = {("gradcam", "effusion"): [0.6, 0.35, 0.34]}
    assert detect_early_warnings(names, auc, scores, drop=0.1, auc_tolerance=0.02) == []


def test_a_dip_that_recovered_is_not_drift() -> None:
    """A C-Score that falls and comes back (AUC holding) is a recovered dip; one that stays down is drift."""
    names = ["e1", "e2", "e3", "e4", "e5"]
    auc = [0.95, 0.95, 0.96, 0.95, 0.95]
    scores = {
        ("gradcam", "nodule"): [0.70, 0.50, 0.55, 0.66, 0.68],  # dips at e2/e3, back within 0.1 at e4
        ("gradcam", "effusion"): [0.70, 0.72, 0.50, 0.52, 0.55],  # falls at e3 and stays down
        ("layercam", "nodule"): [0.70, 0.50, 0.50, 0.75, 0.40],  # back at e4 but falls again at e5
    }
    warns = detect_early_warnings(names, auc, scores, drop=0.1, auc_tolerance=0.02)
    got = {(w.checkpoint, w.method, w.class_name): w.recovered_at for w in warns}
    assert got == {
        ("e2", "gradcam", "nodule"): "e4",
        ("e3", "gradcam", "nodule"): "e4",
        ("e3", "gradcam", "effusion"): None,
        ("e4", "gradcam", "effusion"): None,
        ("e5", "gradcam", "effusion"): None,
        ("e2", "layercam", "nodule"): "e4",
        ("e3", "layercam", "nodule"): "e4",
        ("e5", "layercam", "nodule"): None,  # the new fall (best 0.75 at e4) lasts to the end
    }
    nodule = next(w for w in warns if w.checkpoint == "e2" and w.method == "gradcam")
    assert nodule.recovered
    assert nodule.recovered_c_score == pytest.approx(0.66)
    assert "recovered at e4 (C-Score 0.660)" in nodule.message()
    # a C-Score that comes back only while the AUC has dropped has not recovered: the model changed
    assert (
        detect_early_warnings(["a", "b", "c"], [0.95, 0.95, 0.80], {("m", "c"): [0.7, 0.5, 0.7]}, drop=0.1)[
            0
        ].recovered_at
        is None
    )

    series = CheckpointSeries(
        checkpoints=(), rows=(), warnings=tuple(warns), methods=("gradcam", "layercam"), class_names=()
    )
    assert {(w.checkpoint, w.class_name, w.method) for w in series.drifting} == {
        ("e3", "effusion", "gradcam"),
        ("e4", "effusion", "gradcam"),
        ("e5", "effusion", "gradcam"),
        ("e5", "nodule", "layercam"),
    }
    assert len(series.recovered) == 4
    again = CheckpointSeries.from_dict(json.loads(series.to_json()))
    assert [w.recovered_at for w in again.warnings] == [w.recovered_at for w in series.warnings]
    assert [w.message() for w in again.warnings] == [w.message() for w in series.warnings]


def test_a_checkpoint_with_other_classes_cannot_join_the_series() -> None:
    a = loaded_model(nn.Identity(), class_names=("normal", "nodule"))
    b = loaded_model(nn.Identity(), class_names=("nodule", "normal"))
    assert series_mismatch(("normal", "nodule"), a, "a") is None
    why = series_mismatch(("normal", "nodule"), b, "epoch 2")
    assert why is not None
    assert "checkpoint 'epoch 2' has classes ['nodule', 'normal']" in why
    assert "one model's training run" in why
