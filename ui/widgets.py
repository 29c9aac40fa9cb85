"""Small reusable pieces of page: the error boundary, image panels, the verdict banner."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import streamlit as st

from ui.figures import colorbar_html
from verification.errors import VerificationError
from verification.reference import VerificationReport

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


def image_panel(title: str, picture: np.ndarray, *, caption: str | None = None) -> None:
    st.markdown(f"**{title}**")
    st.image(picture, caption=caption, width="stretch")


def colorbar(colormap: str, *, low: str = "low attention", high: str = "high attention") -> None:
    st.html(colorbar_html(colormap, low=low, high=high))


def verdict_banner(*, suitable: bool, headline: str, detail: str) -> None:
    """The verdict word with the numbers behind it, never the word alone."""
    if suitable:
        st.success(f"**{headline}** — {detail}", icon=":material/verified:")
    else:
        st.error(f"**{headline}** — {detail}", icon=":material/gpp_bad:")


def notices(items: list[str]) -> None:
    for note in items:
        st.info(note, icon=":material/info:")


def report_downloads(report: VerificationReport, *, stem: str) -> None:
    """CSV of the per-image rows and JSON of everything, side by side."""
    from ui.loaders import report_json

    c1, c2, _ = st.columns([1, 1, 4])
    c1.download_button(
        "Download CSV",
        pd.DataFrame.from_records(report.rows()).to_csv(index=False),
        file_name=f"{stem}.csv",
        mime="text/csv",
        on_click="ignore",
        icon=":material/table:",
    )
    c2.download_button(
        "Download JSON",
        report_json(report),
        file_name=f"{stem}.json",
        mime="application/json",
        on_click="ignore",
        icon=":material/data_object:",
    )


def report_verdict(report: VerificationReport, headline: str) -> None:
    """The verdict banner of a verification report: the word in the headline, every number in the detail."""
    text = report.text()
    detail = text.split(": ", 1)[1] if text.startswith(report.verdict + ":") else text
    verdict_banner(suitable=report.suitable, headline=headline, detail=detail)
