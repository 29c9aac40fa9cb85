"""Every session-state key the dashboard uses, declared once, with its type and default.

Widgets take ``key=K.X.name``; code reads ``K.X.get()`` and writes ``K.X.set(v)``. Nothing else in the app
touches ``st.session_state`` with a string literal, so a typo cannot silently create a second key.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import streamlit as st

T = TypeVar("T")


@dataclass(frozen=True)
class StateKey(Generic[T]):
    """One typed session-state entry. ``factory`` builds the default so mutable defaults are never shared."""

    name: str
    factory: Callable[[], T]

    def get(self) -> T:
        if self.name not in st.session_state:
            st.session_state[self.name] = self.factory()
        return cast(T, st.session_state[self.name])

    def set(self, value: T) -> None:
        st.session_state[self.name] = value

    def persist(self) -> None:
        """Keep a page widget's value while another page shows: Streamlit drops the state of widgets that a
        run did not draw, unless the key is written again during the run (its documented workaround)."""
        if self.name in st.session_state:
            st.session_state[self.name] = st.session_state[self.name]

    def init(self) -> None:
        """Give the key its default if unset, so a widget bound to it starts from that default."""
        if self.name not in st.session_state:
            st.session_state[self.name] = self.factory()


def read_once(key: StateKey[Any], files: Sequence[Any], extra: tuple[Any, ...], read: Callable[[], T]) -> T:
    """What ``read()`` made of the uploaded ``files`` (Streamlit UploadedFiles) with the settings ``extra``,
    read once per set of uploads: a rerun with the same files (same ``file_id``s) and settings (any other
    widget change) returns what was read instead of expanding and hashing the bytes again. An exception
    is not kept, so a failed read is retried (and its error shown) on the next run."""
    ids = (tuple(str(f.file_id) for f in files), extra)
    kept = key.get()
    if kept is not None and kept[0] == ids:
        return cast(T, kept[1])
    key.set(None)  # a failed read below must not leave the previous files' result in place
    value = read()
    key.set((ids, value))
    return value


def _const(value: T) -> Callable[[], T]:
    return lambda: value


@dataclass(frozen=True)
class ModelSlotKeys:
    """The widget and memory keys of one model slot (A or B)."""

    source: StateKey[str]  # "demo" | "upload"
    demo_name: StateKey[str]
    upload: StateKey[Any]  # st.file_uploader value (UploadedFile | None)
    sidecar: StateKey[Any]  # optional JSON sidecar upload
    architecture: StateKey[str]  # architecture name for bare state dicts
    trust: StateKey[bool]
    trusted_file: StateKey[str | None]  # the upload the trust tick was given for (see sidebar.trust_checkbox)
    last_good: StateKey[Any]  # ui.loaders.ModelChoice | None: what to fall back to after a failed load


def _slot(slot: str, demo_default: str) -> ModelSlotKeys:
    return ModelSlotKeys(
        source=StateKey(f"model_{slot}_source", _const("demo")),
        demo_name=StateKey(f"model_{slot}_demo", _const(demo_default)),
        upload=StateKey(f"model_{slot}_upload", _const(None)),
        sidecar=StateKey(f"model_{slot}_sidecar", _const(None)),
        architecture=StateKey(f"model_{slot}_arch", _const("")),
        trust=StateKey(f"model_{slot}_trust", _const(False)),
        trusted_file=StateKey(f"model_{slot}_trusted_file", _const(None)),
        last_good=StateKey(f"model_{slot}_last_good", _const(None)),
    )


class K:
    """The registry of keys."""

    MODEL_A = _slot("a", "sound")
    MODEL_B = _slot("b", "shortcut")
    MODEL_B_ENABLED: StateKey[bool] = StateKey("model_b_enabled", _const(False))  # off until asked for

    IMAGES_SOURCE: StateKey[str] = StateKey("images_source", _const("demo"))  # "demo" | "upload"
    IMAGES_SPLIT: StateKey[str] = StateKey("images_split", _const("test"))
    IMAGES_UPLOAD: StateKey[Any] = StateKey("images_upload", _const(None))
    # What the uploads above were read as, with their file ids: a rerun with the same uploads reuses it.
    IMAGES_UPLOAD_READ: StateKey[Any] = StateKey("images_upload_read", _const(None))
    IMAGES_LAST_GOOD: StateKey[Any] = StateKey("images_last_good", _const(None))  # ui.loaders.ImageSet | None
    IMAGE_INDEX: StateKey[int] = StateKey("image_index", _const(0))

    BUNDLE_SOURCE: StateKey[str] = StateKey("bundle_source", _const("demo"))  # "demo" | "upload" | "build"
    BUNDLE_UPLOAD: StateKey[Any] = StateKey("bundle_upload", _const(None))
    BUNDLE_BUILD_UPLOAD: StateKey[Any] = StateKey("bundle_build_upload", _const(None))
    BUNDLE_LAST_GOOD: StateKey[Any] = StateKey("bundle_last_good", _const(None))

    # What the sidebar resolved this run (ui.sidebar.Workspace); written once per run by the sidebar.
    WORKSPACE: StateKey[Any] = StateKey("workspace", _const(None))

    # Attention page controls.
    METHOD: StateKey[str] = StateKey("method", _const("gradcam"))
    LAYER: StateKey[str] = StateKey("layer", _const(""))  # "" = the model's default target layer
    TARGET: StateKey[str] = StateKey("target", _const("predicted"))  # "predicted" or a class name
    OPACITY: StateKey[float] = StateKey("opacity", _const(0.45))
    COLORMAP: StateKey[str] = StateKey("colormap", _const("turbo"))
    SEG_CLASS: StateKey[str] = StateKey("seg_class", _const(""))
    SEG_THRESHOLD: StateKey[float] = StateKey("seg_threshold", _const(0.5))
    ATTENTION_SLOW: StateKey[bool] = StateKey("attention_slow", _const(False))
    SHOW_LESION: StateKey[bool] = StateKey("show_lesion", _const(True))
    DRAW_REGION: StateKey[bool] = StateKey("viewer_draw_open", _const(False))  # the drawing chart, on request

    FEATURE_STAT: StateKey[str] = StateKey("feature_stat", _const("mean"))

    # Pages with longer work keep their last result so a rerun does not lose it.
    DATASET_SOURCE: StateKey[str] = StateKey(
        "dataset_source", _const("current")
    )  # "upload"|"folder"|"current"
    DATASET_UPLOAD: StateKey[Any] = StateKey("dataset_upload", _const(None))
    DATASET_FOLDER: StateKey[str] = StateKey("dataset_folder", _const(""))
    DATASET_RESULT: StateKey[Any] = StateKey("dataset_result", _const(None))  # ui.loaders.DatasetResult
    # Run the faithfulness line E6 (deletion/insertion, ~40 extra forwards per image) in the verdicts.
    VERIFY_FAITHFULNESS: StateKey[bool] = StateKey("verify_faithfulness", _const(False))
    CONSISTENCY_METHODS: StateKey[list[str]] = StateKey(
        "consistency_methods", lambda: ["gradcam", "gradcampp", "layercam"]
    )
    CONSISTENCY_TAU: StateKey[float] = StateKey("consistency_tau", _const(0.9))
    CONSISTENCY_GAMMA: StateKey[float] = StateKey("consistency_gamma", _const(2.0))
    CONSISTENCY_SHOWN: StateKey[str | None] = StateKey("consistency_shown", _const(None))
    # Consistency on the user's own run: uploaded checkpoints (files or a zip) and a labelled evaluation set.
    CONSISTENCY_SOURCE: StateKey[str] = StateKey("consistency_source", _const("demo"))  # "demo" | "upload"
    CONSISTENCY_UPLOAD: StateKey[Any] = StateKey("consistency_upload", _const(None))
    CONSISTENCY_ARCH: StateKey[str] = StateKey("consistency_arch", _const(""))
    CONSISTENCY_TRUST: StateKey[bool] = StateKey("consistency_trust", _const(False))
    CONSISTENCY_TRUSTED_FILES: StateKey[str | None] = StateKey("consistency_trusted_files", _const(None))
    CONSISTENCY_EVAL: StateKey[str] = StateKey("consistency_eval", _const("sidebar"))  # "sidebar" | "upload"
    CONSISTENCY_EVAL_UPLOAD: StateKey[Any] = StateKey("consistency_eval_upload", _const(None))
    # What the two uploads above were read as (see read_once): reruns reuse them.
    CONSISTENCY_UPLOAD_READ: StateKey[Any] = StateKey("consistency_upload_read", _const(None))
    CONSISTENCY_EVAL_READ: StateKey[Any] = StateKey("consistency_eval_read", _const(None))

    @classmethod
    def page_widgets(cls) -> tuple[StateKey[Any], ...]:
        """Widget keys drawn by one page but read (or expected back) elsewhere; persisted every run."""
        return (
            cls.METHOD,
            cls.LAYER,
            cls.TARGET,
            cls.OPACITY,
            cls.COLORMAP,
            cls.SEG_CLASS,
            cls.SEG_THRESHOLD,
            cls.ATTENTION_SLOW,
            cls.SHOW_LESION,
            cls.DRAW_REGION,
            cls.CONSISTENCY_METHODS,
            cls.CONSISTENCY_TAU,
            cls.CONSISTENCY_GAMMA,
            cls.CONSISTENCY_SHOWN,
            cls.CONSISTENCY_SOURCE,
            cls.CONSISTENCY_ARCH,
            cls.CONSISTENCY_TRUST,
            cls.CONSISTENCY_EVAL,
            cls.FEATURE_STAT,
            cls.DATASET_SOURCE,
            cls.DATASET_FOLDER,
            cls.VERIFY_FAITHFULNESS,
        )
