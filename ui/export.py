"""The reports of the working set: the backend's one HTML report (``verification.report``) and its PDF
(``verification.report.pdf``), both from the verdict's result document, with the working images handed over
by name (uploads are not on disk).

Both are made when the user clicks (the download buttons take a callable), so the time a report states is the
time it was made, never when a page first drew it. The HTML body is cached (model, bundle, images) with a
placeholder where the time goes; the PDF is rendered at the click (about half a second on the demo; its size
is measured once per result for the caption)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from ui import loaders
from verification.report import made_now, render_pdf, render_report
from verification.verdict import VerificationReport

_MADE = "\x00made\x00"  # where the time goes in the cached HTML (never in a real document)


def _displays(images: loaders.ImageSet) -> dict[str, np.ndarray]:
    return {item.image.name: item.image.display for item in images.items}


@dataclass(frozen=True)
class ReportKey:
    """What a report of the working set is cached by: model, bundle and images (content hashes), title."""

    model_hash: str
    bundle_key: str
    image_hashes: tuple[str, ...]
    title: str


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def _report_html_body(key: ReportKey, _report: VerificationReport, _images: loaders.ImageSet) -> str:
    return render_report(_report.to_document(), title=key.title, displays=_displays(_images), made=_MADE)


def report_html(
    key: ReportKey, report: VerificationReport, images: loaders.ImageSet, *, made: str | None = None
) -> str:
    """The self-contained HTML report of a verdict on the working images, stamped with ``made`` (**default**
    now)."""
    return _report_html_body(key, report, images).replace(_MADE, made or made_now())


def report_pdf(
    title: str, report: VerificationReport, images: loaders.ImageSet, *, made: str | None = None
) -> bytes:
    """The PDF report of a verdict on the working images, made now (or at ``made``)."""
    return render_pdf(report.to_document(), title=title, displays=_displays(images), made=made or made_now())


@st.cache_data(show_spinner=False, max_entries=8)
def pdf_size(key: ReportKey, _report: VerificationReport, _images: loaders.ImageSet) -> int:
    """Bytes of the PDF report (the time stamp changes a few bytes, not the size class)."""
    return len(report_pdf(key.title, _report, _images, made="0000-00-00 00:00:00 UTC"))
