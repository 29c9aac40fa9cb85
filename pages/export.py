"""Report & export: the self-contained HTML report and the PDF report (each made when clicked), the result
document (JSON) and the per-image table (CSV), and the demo sample files."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from ui import evidence, export, glossary, loaders
from ui.sidebar import workspace
from ui.widgets import guard

st.title("Report & export", anchor=False)
ws = workspace(bundle=True)

st.caption(
    "The report, as one HTML file or as a PDF to file: the verdict, the evidence lines with their numbers, "
    "thresholds, calibration and band charts, the per-class and per-image results, example heatmaps with a "
    "plain sentence each and their class references, and the provenance (model and bundle hashes, versions). "
    "Each is made when you click and says when. Pictures are embedded, so both open offline and can be "
    "archived or attached. The JSON is the same result document the command line writes: "
    "`python -m verification report result.json -o report.html --pdf report.pdf` turns it into these reports."
)

faithful = evidence.faithfulness_switch()
report = None
with guard("Verifying the images"), st.spinner("Verifying…"):
    report = loaders.verify_set(
        ws.model_a.model, ws.model_a.lock, ws.bundle, ws.images, faithfulness=faithful
    )
if report is None:
    st.stop()
verified = report  # its narrowed type, for the callables below (they run when clicked)
evidence.verdict_banner(report, f"Model on {ws.images.label}")
evidence.verdict_metrics(report)


def report_button(
    col: DeltaGenerator, what: str, make: Callable[[], str | bytes], suffix: str, icon: str
) -> None:
    """A report made when clicked (the data is a callable): the time it states is when it was made."""
    col.download_button(
        f"Download the {what}",
        make,
        file_name=f"attention_verification_report.{suffix}",
        mime={"html": "text/html", "pdf": "application/pdf"}[suffix],
        type="primary",
        icon=f":material/{icon}:",
        on_click="ignore",
        help=glossary.help_for(what),
    )


title = f"Attention verification — {ws.model_a.spec.label}"
key = export.ReportKey(ws.model_a.model.content_hash, ws.bundle.key, ws.images.hashes, title)
with guard("Writing the reports"):
    html_size = len(export.report_html(key, report, ws.images).encode("utf-8"))
    pdf_size = export.pdf_size(key, report, ws.images)
    c1, c2, _ = st.columns([1, 1, 2])
    report_button(
        c1, "HTML report", lambda: export.report_html(key, verified, ws.images), "html", "description"
    )
    report_button(
        c2, "PDF report", lambda: export.report_pdf(title, verified, ws.images), "pdf", "picture_as_pdf"
    )
    c1.caption(f"{html_size / 1e6:.2f} MB, self-contained, opens offline.")
    c2.caption(f"{pdf_size / 1e3:.0f} kB, a few A4 pages to file.")

st.subheader("Numbers")
evidence.downloads(report, stem="verification")

samples = loaders.demo_samples()
if samples:
    st.subheader("Demo sample files")
    st.caption("Download these and upload them again through the sidebar to try each input path.")
    cols = st.columns(3)
    for i, (path, description) in enumerate(samples):
        cols[i % 3].download_button(
            path.name,
            data=path.read_bytes,
            file_name=path.name,
            on_click="ignore",
            icon=":material/download:",
            help=description or None,
        )
