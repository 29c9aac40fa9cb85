"""The reports of a verification result: one offline HTML page and a PDF to file, from the same result
document (:meth:`~verification.verdict.VerificationReport.to_document`).

One concern per module: :mod:`~verification.report.html` (the HTML page, :func:`render_report`),
:mod:`~verification.report.pdf` (the PDF, :func:`render_pdf`), and what both share —
:mod:`~verification.report.charts` (the band charts' geometry and words, also drawn by the dashboard),
:mod:`~verification.report.content` (the same words: accuracy, verdict per class, example sentences, when the
report was made) and :mod:`~verification.report.pictures` (example overlays and reference maps through
:mod:`verification.render`, their JPEG/PNG encodings).
"""

from verification.report.charts import Band, bands, ticks
from verification.report.content import example_sentence, made_now
from verification.report.html import band_svg, img_tag, kv_table, render_report
from verification.report.pdf import render_pdf
from verification.report.pictures import (
    EXAMPLE_SIDE,
    JPEG_QUALITY,
    REFERENCE_SIDE,
    example_pictures,
    jpeg_bytes,
    overlay_png,
)

__all__ = [
    "EXAMPLE_SIDE",
    "JPEG_QUALITY",
    "REFERENCE_SIDE",
    "Band",
    "band_svg",
    "bands",
    "example_pictures",
    "example_sentence",
    "img_tag",
    "jpeg_bytes",
    "kv_table",
    "made_now",
    "overlay_png",
    "render_pdf",
    "render_report",
    "ticks",
]
