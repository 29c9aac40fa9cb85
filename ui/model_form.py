"""The model upload form's own fields (issue #15): the task, the label names, the sidecar download, the
multi-label hint, and errors shown at the field that fixes them.

The sidebar (``ui/sidebar.py``) calls, in its upload form: :func:`field_slot` just above a field whose errors
should appear there, :func:`label_fields` (task + label names, which become the sidecar handed to the
loader), :func:`field_errors` around the load, and :func:`after_load` once the model loaded. The form's words
are in :mod:`ui.uploads`, the sidecar merge in :mod:`verification.uploads` (no Streamlit: tested directly).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePath

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from ui.state import ModelSlotKeys, StateKey
from ui.uploads import FIELD_LABELS, form_message
from ui.widgets import Failed
from verification.errors import MissingFieldError
from verification.io.records import LoadedModel
from verification.io.sidecar import sidecar_bytes, sidecar_of
from verification.multilabel import multilabel_hint
from verification.uploads import TASKS, parse_names, unnamed_outputs

TASK_HELP = (
    "Single-label: the outputs compete, exactly one class per image (softmax). Multi-label: each output is "
    "its own yes/no finding, scored by its own sigmoid (several can be present at once; they need not add "
    "up to 100 %). The sidecar's 'task' is used when you leave it on the first choice."
)
NAMES_HELP = (
    "One name per model output, in output order. They replace the sidecar's class_names (or class_0, "
    "class_1, …) on every page; download the sidecar below to keep them."
)

_slots = threading.local()  # this run's containers above the form's fields (one script run per thread)


def _prefix(slot: ModelSlotKeys) -> str:
    return slot.architecture.name.removesuffix("_arch")  # "model_a"


def names_key(slot: ModelSlotKeys) -> StateKey[str]:
    return StateKey(f"{_prefix(slot)}_names", lambda: "")


def task_key(slot: ModelSlotKeys) -> StateKey[str]:
    return StateKey(f"{_prefix(slot)}_task", lambda: "auto")


def field_slot(slot: ModelSlotKeys, field: str) -> None:
    """Reserve, at this point of the form, the place where errors about ``field`` are shown."""
    found = getattr(_slots, "by_field", None)
    if found is None:
        found = _slots.by_field = {}
    found[_prefix(slot), field] = st.container()


def _container(slot: ModelSlotKeys, field: str) -> DeltaGenerator | None:
    return getattr(_slots, "by_field", {}).get((_prefix(slot), field))


def label_fields(slot: ModelSlotKeys) -> tuple[tuple[str, ...] | None, str]:
    """The task choice and the label-names editor; returns (names typed, task: "auto" or a task)."""
    tk, nk = task_key(slot), names_key(slot)
    tk.init()
    nk.init()
    choices: list[str] = list(TASKS)
    task = st.selectbox("Task", choices, format_func=lambda t: TASKS[t], key=tk.name, help=TASK_HELP)
    field_slot(slot, "class_names")
    text = st.text_area(
        "Label names (one per line, in output order) — optional",
        key=nk.name,
        placeholder="from the sidecar; else class_0, class_1, …",
        help=NAMES_HELP,
        height=100,
    )
    return parse_names(text), str(task)


@contextmanager
def field_errors(slot: ModelSlotKeys, filename: str, failed: Failed) -> Iterator[None]:
    """Around the load: a :class:`MissingFieldError` is shown at its field (reserved by :func:`field_slot`)
    in the form's words, and ``failed`` is set; other errors pass on to the surrounding ``guard``."""
    try:
        yield
    except MissingFieldError as exc:
        failed.failed = True
        where = _container(slot, exc.field)
        text = form_message(exc, filename)
        if where is None:
            st.error(text, icon=":material/edit_note:")
        else:
            where.error(text, icon=":material/edit_note:")


def _fill_names(key: str, names: tuple[str, ...]) -> None:
    st.session_state[key] = "\n".join(names)


def after_load(slot: ModelSlotKeys, filename: str, model: LoadedModel) -> None:
    """Under a model that loaded from an upload: the multi-label hint, unnamed classes, the sidecar
    download."""
    task_choice = task_key(slot).get()
    hint = multilabel_hint(model)
    if hint is not None and task_choice == "auto":
        st.info(
            f"**This may be a multi-label model**: {hint}. It is read as single-label now (a softmax: its "
            f"{model.num_classes} probabilities add up to 100 %). If its outputs are independent findings, "
            f"choose **{TASKS['multilabel'].split(':')[0]}** in the **{FIELD_LABELS['task']}** field above.",
            icon=":material/label:",
        )
    elif task_choice == "auto" and model.task == "classification" and model.num_classes > 2:
        st.caption(
            f"Read as single-label: the {model.num_classes} probabilities are a softmax and add up to 100 %. "
            f"If the outputs are independent findings, choose **Multi-label** in the **Task** field above."
        )
    if unnamed_outputs(model.class_names):
        st.caption(
            f"The {model.num_classes} outputs have no names (class_0 … class_{model.num_classes - 1}): type "
            f"them in **{FIELD_LABELS['class_names']}** above, one per line."
        )
    st.button(
        "Edit the current names",
        key=f"{_prefix(slot)}_names_fill",
        on_click=_fill_names,
        args=(names_key(slot).name, tuple(model.class_names)),
        help="Copy the model's current names into the Label names box to edit them.",
    )
    stem = PurePath(filename).stem or "model"
    st.download_button(
        "Download the sidecar JSON",
        data=download_bytes(model),
        file_name=f"{stem}.json",
        mime="application/json",
        key=f"{_prefix(slot)}_sidecar_download",
        help="Architecture, label names, task, input size and mean/std as used now: put it beside the "
        "weights (same stem, .json) or upload it with them next time.",
    )


def download_bytes(model: LoadedModel) -> bytes:
    """The sidecar JSON the download button offers: the loaded model as it is used now."""
    return sidecar_bytes(sidecar_of(model))
