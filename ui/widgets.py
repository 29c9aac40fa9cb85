"""Small reusable pieces of page: the error boundary, choices bound to a session key, image panels, the colour
bar, notices (the verdict is drawn by :mod:`ui.evidence`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import streamlit as st

from ui.figures import colorbar_html
from ui.state import StateKey
from verification.errors import VerificationError

log = logging.getLogger(__name__)


class Failed:
    """Set by :func:`guard` when the block raised, so the caller can skip what depended on it."""

    def __init__(self) -> None:
        self.failed = False

    def __bool__(self) -> bool:
        return self.failed


@contextmanager
def guard(what: str) -> Iterator[Failed]:
    """Run a block that calls the backend; on failure show ``st.error`` and let the rest of the page draw.

    Backend errors (``VerificationError``) carry a message written for the user and are shown as is; anything
    else comes from a user's model or a bug, so it is shown with its type and logged with its traceback.
    Streamlit's own control flow (rerun, stop) derives from BaseException and passes through untouched.
    """
    state = Failed()
    try:
        yield state
    except VerificationError as exc:
        state.failed = True
        st.error(f"**{what}** — {exc}", icon=":material/error:")
    except Exception as exc:
        state.failed = True
        log.exception("%s failed", what)
        st.error(f"**{what}** failed unexpectedly: `{type(exc).__name__}: {exc}`", icon=":material/error:")


def choice(
    key: StateKey[str],
    label: str,
    options: Mapping[str, str],
    *,
    horizontal: bool = False,
    show_label: bool = True,
    help: str | None = None,
) -> str:
    """A radio over ``options`` (value → the words shown), bound to ``key`` and starting from its default."""
    key.init()
    return str(
        st.radio(
            label,
            list(options),
            format_func=options.__getitem__,
            horizontal=horizontal,
            key=key.name,
            label_visibility="visible" if show_label else "collapsed",
            help=help,
        )
    )


def switch(key: StateKey[bool], label: str, *, help: str | None = None) -> bool:
    """A toggle bound to ``key``, starting from its default."""
    key.init()
    return bool(st.toggle(label, key=key.name, help=help))


def image_panel(title: str, picture: np.ndarray, *, caption: str | None = None) -> None:
    st.markdown(f"**{title}**")
    st.image(picture, caption=caption, width="stretch")


def colorbar(colormap: str, *, low: str = "low attention", high: str = "high attention") -> None:
    st.html(colorbar_html(colormap, low=low, high=high))


def notices(items: list[str]) -> None:
    for note in items:
        st.info(note, icon=":material/info:")
