"""Checkpoint tracking: AUC, accuracy and the C-Score per method and class for a series of checkpoints, and
the early warning — the C-Score falls by more than ``drop`` from its running best while the AUC holds within
``auc_tolerance`` (a dip that recovered is marked so and is not drift).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from torch import Tensor

from verification.consistency.auc import ovr_auc
from verification.consistency.cscore import (
    DEFAULT_TAU,
    Status,
    consistency_report,
    nan_to_none,
)
from verification.consistency.pairwise import DEFAULT_EPS, DEFAULT_GAMMA, Backend
from verification.errors import ShapeError, VerificationError
from verification.io.images import ImagesLike
from verification.io.records import LoadedImage, LoadedModel

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


WarningKind = Literal["c_score_drop", "collapsed"]


@dataclass(frozen=True)
class EarlyWarning:
    """At ``checkpoint`` the C-Score of (``method``, ``class_name``) fell ``drop`` below its running best
    (reached at ``best_checkpoint``) — or the gold list collapsed — while the AUC held within tolerance.

    ``recovered_at`` names the first later checkpoint where the C-Score is back within ``drop`` of that best
    with the AUC no worse than at the best (``recovered_c_score`` its value): a dip that recovered, which is
    not drift toward a shortcut. None while the dip lasts to the last checkpoint."""

    kind: WarningKind
    checkpoint: str
    checkpoint_index: int
    method: str
    class_name: str
    c_score: float
    best_c_score: float
    best_checkpoint: str
    drop: float
    auc: float
    auc_at_best: float
    recovered_at: str | None = None
    recovered_c_score: float = math.nan

    @property
    def recovered(self) -> bool:
        """True when a later checkpoint brought the C-Score back (a dip, not drift)."""
        return self.recovered_at is not None

    def message(self) -> str:
        what = (
            "gold list collapsed"
            if self.kind == "collapsed"
            else f"C-Score {self.c_score:.3f} is {self.drop:.3f} below its best {self.best_c_score:.3f}"
        )
        text = (
            f"{self.checkpoint}: {self.method} / {self.class_name}: {what} (best at {self.best_checkpoint}) "
            f"while AUC holds ({self.auc:.3f} vs {self.auc_at_best:.3f})"
        )
        if self.recovered_at is not None:
            text += f"; recovered at {self.recovered_at} (C-Score {self.recovered_c_score:.3f})"
        return text


def detect_early_warnings(
    checkpoints: Sequence[str],
    auc: Sequence[float],
    scores: Mapping[tuple[str, str], Sequence[float]],
    *,
    drop: float = 0.1,
    auc_tolerance: float = 0.02,
) -> list[EarlyWarning]:
    """Early-warning pattern per (method, class) series of C-Scores over ``checkpoints``.

    "AUC holds" is read both ways: only earlier checkpoints b with ``|AUC_t − AUC_b| ≤ auc_tolerance`` are
    compared with t, so the generic, look-alike maps of a half-trained model (high C-Score, low AUC) never
    raise a warning against the competent model that follows. At checkpoint t a warning is raised when
    ``best − C_t > drop`` (best = the highest non-NaN C-Score among those b); a NaN C-Score there (collapsed
    gold list) is reported with kind "collapsed". A warning whose C-Score comes back — a later checkpoint u
    with ``best − C_u ≤ drop`` and ``AUC_u ≥ AUC_best − auc_tolerance`` — carries ``recovered_at`` (the first
    such u): the dip recovered, and only warnings without it are drift.
    """
    n = len(checkpoints)
    if len(auc) != n:
        raise ShapeError(f"{n} checkpoints but {len(auc)} AUC values")
    out: list[EarlyWarning] = []
    for (method, cls), series in scores.items():
        if len(series) != n:
            raise ShapeError(f"{method}/{cls}: {len(series)} C-Scores for {n} checkpoints")
        for t, s in enumerate(series):
            if math.isnan(auc[t]):
                continue
            comparable = [
                b
                for b in range(t)
                if not (math.isnan(series[b]) or math.isnan(auc[b])) and abs(auc[t] - auc[b]) <= auc_tolerance
            ]
            if comparable:
                best_t = max(comparable, key=lambda b: series[b])
                best = float(series[best_t])
                collapsed = math.isnan(s)
                if collapsed or best - s > drop:
                    back = next(
                        (
                            u
                            for u in range(t + 1, n)
                            if not (math.isnan(series[u]) or math.isnan(auc[u]))
                            and best - series[u] <= drop
                            and auc[u] >= auc[best_t] - auc_tolerance
                        ),
                        None,
                    )
                    out.append(
                        EarlyWarning(
                            kind="collapsed" if collapsed else "c_score_drop",
                            checkpoint=checkpoints[t],
                            checkpoint_index=t,
                            method=method,
                            class_name=cls,
                            c_score=float(s),
                            best_c_score=float(best),
                            best_checkpoint=checkpoints[best_t],
                            drop=math.nan if collapsed else float(best - s),
                            auc=float(auc[t]),
                            auc_at_best=float(auc[best_t]),
                            recovered_at=None if back is None else checkpoints[back],
                            recovered_c_score=math.nan if back is None else float(series[back]),
                        )
                    )
    out.sort(key=lambda w: (w.checkpoint_index, w.method, w.class_name))
    return out


@dataclass(frozen=True)
class CheckpointSummary:
    """Classification quality of one checkpoint on the evaluation set."""

    name: str
    index: int
    auc: float
    accuracy: float
    n_images: int
    class_auc: Mapping[str, float]


@dataclass(frozen=True)
class CheckpointRow:
    """C-Score of one (checkpoint, method, class)."""

    checkpoint: str
    checkpoint_index: int
    method: str
    class_name: str
    c_score: float
    n_gold: int
    n_pairs: int
    status: Status
    reason: str | None


@dataclass(frozen=True)
class CheckpointSeries:
    """AUC, accuracy and C-Score per method and class over a series of checkpoints, with early warnings."""

    checkpoints: tuple[CheckpointSummary, ...]
    rows: tuple[CheckpointRow, ...]
    warnings: tuple[EarlyWarning, ...]
    methods: tuple[str, ...]
    class_names: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def drifting(self) -> tuple[EarlyWarning, ...]:
        """The warnings whose dip lasts to the last checkpoint: drift toward a shortcut, not a passing dip."""
        return tuple(w for w in self.warnings if not w.recovered)

    @property
    def recovered(self) -> tuple[EarlyWarning, ...]:
        """The warnings whose C-Score came back at a later checkpoint."""
        return tuple(w for w in self.warnings if w.recovered)

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per (checkpoint, method, class) with the checkpoint's AUC and accuracy, the
        class AUC, the C-Score, |G_c|, status and the warning kind (empty when none)."""
        import pandas as pd

        summ = {s.index: s for s in self.checkpoints}
        warn = {
            (w.checkpoint_index, w.method, w.class_name): w.kind
            + ("" if w.recovered_at is None else f" (recovered at {w.recovered_at})")
            for w in self.warnings
        }
        records = []
        for r in self.rows:
            s = summ[r.checkpoint_index]
            records.append(
                {
                    "checkpoint": r.checkpoint,
                    "checkpoint_index": r.checkpoint_index,
                    "auc": s.auc,
                    "accuracy": s.accuracy,
                    "method": r.method,
                    "class": r.class_name,
                    "class_auc": s.class_auc.get(r.class_name, math.nan),
                    "c_score": r.c_score,
                    "n_gold": r.n_gold,
                    "n_pairs": r.n_pairs,
                    "status": r.status,
                    "warning": warn.get((r.checkpoint_index, r.method, r.class_name), ""),
                }
            )
        return pd.DataFrame.from_records(records)

    def table(self) -> pd.DataFrame:
        """Wide table: one row per checkpoint; AUC, accuracy, then ``C[method/class]`` and
        ``|G|[method/class]`` columns, then the warnings of that checkpoint."""
        import pandas as pd

        frame = self.to_frame()
        out = pd.DataFrame(
            {
                "checkpoint": [s.name for s in self.checkpoints],
                "auc": [s.auc for s in self.checkpoints],
                "accuracy": [s.accuracy for s in self.checkpoints],
            }
        )
        for m in self.methods:
            for c in self.class_names:
                sel = frame[(frame["method"] == m) & (frame["class"] == c)].set_index("checkpoint_index")
                if sel.empty:
                    continue
                out[f"C[{m}/{c}]"] = [sel["c_score"].get(s.index, math.nan) for s in self.checkpoints]
                out[f"|G|[{m}/{c}]"] = [int(sel["n_gold"].get(s.index, 0)) for s in self.checkpoints]
        out["warnings"] = [
            "; ".join(
                f"{w.method}/{w.class_name} {w.kind}" + ("" if w.recovered_at is None else " (recovered)")
                for w in self.warnings
                if w.checkpoint_index == s.index
            )
            for s in self.checkpoints
        ]
        return out

    def to_csv(self, path: str | Path, *, wide: bool = False) -> Path:
        """Write the long table (or the wide :meth:`table` with ``wide=True``) as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        (self.table() if wide else self.to_frame()).to_csv(path, index=False)
        return path

    def to_dict(self) -> dict[str, Any]:
        def clean(d: dict[str, Any]) -> dict[str, Any]:
            return {k: (nan_to_none(v) if isinstance(v, float) else v) for k, v in d.items()}

        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "checkpoint_series",
            "methods": list(self.methods),
            "class_names": list(self.class_names),
            "params": dict(self.params),
            "checkpoints": [
                {**clean(asdict(s)), "class_auc": clean(dict(s.class_auc))} for s in self.checkpoints
            ],
            "rows": [clean(asdict(r)) for r in self.rows],
            "warnings": [{**clean(asdict(w)), "message": w.message()} for w in self.warnings],
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """JSON text (NaN written as null); also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointSeries:
        if data.get("kind") != "checkpoint_series" or data.get("schema_version") != SCHEMA_VERSION:
            raise VerificationError("not a checkpoint series record of a supported schema version")

        def nan(v: Any) -> Any:
            return math.nan if v is None else v

        summaries = tuple(
            CheckpointSummary(
                name=s["name"],
                index=s["index"],
                auc=nan(s["auc"]),
                accuracy=nan(s["accuracy"]),
                n_images=s["n_images"],
                class_auc={k: nan(v) for k, v in s["class_auc"].items()},
            )
            for s in data["checkpoints"]
        )
        rows = tuple(CheckpointRow(**{**r, "c_score": nan(r["c_score"])}) for r in data["rows"])
        fields = EarlyWarning.__dataclass_fields__
        warnings = tuple(
            EarlyWarning(**{k: v if k == "recovered_at" else nan(v) for k, v in w.items() if k in fields})
            for w in data["warnings"]
        )
        return cls(
            checkpoints=summaries,
            rows=rows,
            warnings=warnings,
            methods=tuple(data["methods"]),
            class_names=tuple(data["class_names"]),
            params=dict(data["params"]),
        )


CamFn = Callable[..., Sequence[Any]]
ProgressFn = Callable[[int, int, str], Any]


def _load_checkpoint(item: str | Path | LoadedModel, trust: bool) -> LoadedModel:
    if isinstance(item, LoadedModel):
        return item
    from verification.io.models import load_model

    return load_model(item, trust=trust)


def _input_tensor(images: ImagesLike, model: LoadedModel, cache: dict[str, list[LoadedImage]]) -> Tensor:
    if isinstance(images, Tensor):
        if images.ndim != 4:
            raise ShapeError(f"expected an input tensor (N, C, H, W); got {tuple(images.shape)}")
        return images
    from verification.io.images import as_image, to_tensor

    if "images" not in cache:  # read once, preprocessed for each checkpoint
        cache["images"] = [as_image(im) for im in images]
    return to_tensor(cache["images"], model)


def series_mismatch(class_names: Sequence[str], model: LoadedModel, name: str) -> str | None:
    """Why checkpoint ``name`` (``model``) cannot join a series whose classes are ``class_names`` (None when
    it can): every checkpoint of a series has the same classes, in the same order."""
    if tuple(model.class_names) == tuple(class_names):
        return None
    return (
        f"checkpoint '{name}' has classes {list(model.class_names)}, the series has {list(class_names)}: a "
        "series must be one model's training run"
    )


def _checkpoint_name(item: str | Path | LoadedModel, model: LoadedModel) -> str:
    return Path(item).stem if isinstance(item, (str, Path)) else model.name


def track_checkpoints(
    checkpoints: Sequence[str | Path | LoadedModel],
    images: ImagesLike,
    labels: Sequence[int] | np.ndarray,
    *,
    methods: Sequence[str] = ("gradcam",),
    layer: str | None = None,
    names: Sequence[str] | None = None,
    tau: float = DEFAULT_TAU,
    gamma: float = DEFAULT_GAMMA,
    eps: float = DEFAULT_EPS,
    max_pairs: int | None = None,
    seed: int = 0,
    drop: float = 0.1,
    auc_tolerance: float = 0.02,
    batch_size: int = 16,
    backend: Backend = "auto",
    trust: bool = False,
    cam_fn: CamFn | None = None,
    progress: ProgressFn | None = None,
) -> CheckpointSeries:
    """AUC, accuracy and C-Score per method and class for each checkpoint on a labelled evaluation set.

    ``checkpoints``: model files (loaded with :func:`verification.io.models.load_model`) or LoadedModels,
    in training order. ``images``: a preprocessed tensor (N, C, H, W) used as is for every checkpoint, or
    images / image paths converted with each checkpoint's own preprocessing. ``methods``: CAM methods
    computed together by :func:`verification.cam.compute_cams` (``cam_fn`` replaces it, same signature)
    on ``layer`` (None → the default target layer), each image's CAM for its predicted class. AUC is the
    macro one-vs-rest AUC over the classes present in ``labels``; accuracy counts a garbage-class
    prediction as wrong. Early warnings: see :func:`detect_early_warnings` (``drop``, ``auc_tolerance``).
    ``progress(done, total, message)`` is called after each checkpoint.
    """
    if not checkpoints:
        raise ValueError("no checkpoints given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if cam_fn is None:
        from verification.cam import compute_cams

        cam_fn = compute_cams
    cache: dict[str, list[LoadedImage]] = {}
    summaries: list[CheckpointSummary] = []
    rows: list[CheckpointRow] = []
    class_names: tuple[str, ...] | None = None
    ckpt_names: list[str] = []
    for t, item in enumerate(checkpoints):
        model = _load_checkpoint(item, trust)
        name = names[t] if names is not None else _checkpoint_name(item, model)
        ckpt_names.append(name)
        if class_names is None:
            class_names = model.class_names
        elif (why := series_mismatch(class_names, model, name)) is not None:
            raise ShapeError(why)
        x = _input_tensor(images, model, cache)
        if x.shape[0] != y.shape[0]:
            raise ShapeError(f"{x.shape[0]} images but {y.shape[0]} labels")
        if y.size and (y.min() < 0 or y.max() >= model.num_classes):
            raise ShapeError(f"labels must lie in 0..{model.num_classes - 1}")
        maps: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        probs_parts: list[np.ndarray] = []
        for s in range(0, x.shape[0], batch_size):
            results = cam_fn(
                model, x[s : s + batch_size], methods=tuple(methods), layers=[layer] if layer else None
            )
            by_method = {r.method: r for r in results}
            missing = [m for m in methods if m not in by_method]
            if missing:
                raise VerificationError(f"the CAM engine returned no result for {missing}")
            for m in methods:
                maps[m].append(np.asarray(by_method[m].maps, dtype=np.float32))
            probs_parts.append(np.asarray(results[0].probs, dtype=np.float64))
        probs = np.concatenate(probs_parts, axis=0)
        auc, per_class = ovr_auc(y, probs)
        acc = float((probs.argmax(axis=1) == y).mean()) if y.size else math.nan
        summaries.append(
            CheckpointSummary(
                name=name,
                index=t,
                auc=auc,
                accuracy=acc,
                n_images=int(y.size),
                class_auc={class_names[c]: v for c, v in per_class.items()},
            )
        )
        for m in methods:
            rep = consistency_report(
                np.concatenate(maps[m], axis=0),
                y,
                probs,
                method=m,
                class_names=class_names,
                tau=tau,
                gamma=gamma,
                eps=eps,
                max_pairs=max_pairs,
                seed=seed,
                backend=backend,
            )
            rows.extend(
                CheckpointRow(
                    checkpoint=name,
                    checkpoint_index=t,
                    method=m,
                    class_name=c.class_name,
                    c_score=c.score,
                    n_gold=c.n_gold,
                    n_pairs=c.n_pairs,
                    status=c.status,
                    reason=c.reason,
                )
                for c in rep.classes
            )
        log.info("checkpoint %s: AUC %.3f, accuracy %.3f", name, auc, acc)
        if progress is not None:
            progress(t + 1, len(checkpoints), name)
    if class_names is None:  # unreachable: checkpoints is non-empty
        raise ValueError("no checkpoints given")
    scored = [c for c in class_names if any(r.class_name == c for r in rows)]
    series = {
        (m, c): [
            next(r.c_score for r in rows if r.checkpoint_index == t and r.method == m and r.class_name == c)
            for t in range(len(checkpoints))
        ]
        for m in methods
        for c in scored
    }
    warnings = detect_early_warnings(
        ckpt_names, [s.auc for s in summaries], series, drop=drop, auc_tolerance=auc_tolerance
    )
    params = {
        "tau": tau,
        "gamma": gamma,
        "eps": eps,
        "max_pairs": max_pairs,
        "seed": seed,
        "drop": drop,
        "auc_tolerance": auc_tolerance,
        "layer": layer,
    }
    return CheckpointSeries(
        checkpoints=tuple(summaries),
        rows=tuple(rows),
        warnings=tuple(warnings),
        methods=tuple(methods),
        class_names=tuple(scored),
        params=params,
    )
