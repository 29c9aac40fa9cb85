"""The HTML report of the working set: the backend's one report (``verification.report``) rendered from the
verdict's result document, with the working images handed over by name (uploads are not on disk). Cached: it
is rebuilt only when the model, the bundle or the images change."""

from __future__ import annotations

import streamlit as st

from ui import loaders
from verification.report import render_report
from verification.verdict import VerificationReport


@st.cache_data(show_spinner="Writing the report…", max_entries=8)
def report_html(
    model_hash: str,
    bundle_key: str,
    image_hashes: tuple[str, ...],
    title: str,
    _report: VerificationReport,
    _images: loaders.ImageSet,
) -> str:
    """The self-contained HTML report of a verdict on the working images."""
    displays = {item.image.name: item.image.display for item in _images.items}
    return render_report(_report.to_document(), title=title, displays=displays)
