"""The verification report as a PDF a clinician can file: a few A4 pages built from the same result document
as the HTML report (:func:`verification.report.render_report`), with the same words
(:mod:`verification.report.content`) and chart geometry (:mod:`verification.report.charts`).

Page 1: the verdict (coloured box), the line that decided it, accuracy with its interval, the image counts,
the time the report was made and the time the verdict was computed, what is missing, warnings, and the
verdict per class. Then every evidence line: its status, whether it votes, its calibration, its per-class
numbers (value, 95 % interval, threshold, images) and its band chart (the same geometry as the HTML's,
:func:`verification.report.charts.bands`). Then the example images: each overlay (JPEG, at most
:data:`~verification.report.pictures.EXAMPLE_SIDE` px) with its plain sentence
(:mod:`verification.verdict.explain`) and its class reference map. Last, the provenance.

Text is set in DejaVu Sans when a copy is found on the machine (Debian's fonts-dejavu, or matplotlib's), so
≤, ≥, −, κ and the like print; otherwise in the PDF core font Helvetica with those characters written out
("<=", ">=", "-"). Nothing is downloaded. A report of the demo's test set is about 150 kB (measured in
``tests/app/test_report_pdf.py``).
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from verification.report.charts import STATUS_RGB, Band, bands, ticks
from verification.report.content import (
    CLASS_COLUMNS,
    accuracy_text,
    as_report,
    class_rows,
    example_sentence,
    made_now,
    unit,
)
from verification.report.pictures import example_pictures, jpeg_bytes

if TYPE_CHECKING:
    from verification.verdict import VerificationReport

__all__ = ["render_pdf"]

_FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/dejavu"),
    Path("/usr/share/fonts/dejavu"),
)
_ASCII = str.maketrans(
    {
        "≤": "<=",
        "≥": ">=",
        "−": "-",
        "–": "-",
        "—": "-",
        "·": "-",
        "×": "x",
        "‖": "||",
        "τ": "tau",
        "γ": "gamma",
        "→": "->",
        "…": "...",
        "’": "'",
        "“": '"',
        "”": '"',
        "⚠": "!",
    }
)
_VERDICT_FILL = {
    "suitable": (227, 244, 232),
    "unsuitable": (251, 228, 228),
    "cannot_verify": (255, 244, 214),
}


def _font_dir() -> Path | None:
    dirs = list(_FONT_CANDIDATES)
    spec = importlib.util.find_spec("matplotlib")
    if spec is not None and spec.origin is not None:
        dirs.append(Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf")
    for d in dirs:
        if (d / "DejaVuSans.ttf").is_file() and (d / "DejaVuSans-Bold.ttf").is_file():
            return d
    return None


class _Doc:
    """fpdf2 with the one font family and the text clean-up in one place."""

    def __init__(self, title: str, made: str) -> None:
        from fpdf import FPDF

        self.pdf = FPDF(orientation="P", unit="mm", format="A4")
        self.pdf.set_auto_page_break(auto=True, margin=14)
        self.pdf.set_margins(14, 14, 14)
        self.pdf.set_title(title)
        self.pdf.set_creator("verification")
        fonts = _font_dir()
        if fonts is not None:
            self.pdf.add_font("dejavu", "", str(fonts / "DejaVuSans.ttf"))
            self.pdf.add_font("dejavu", "B", str(fonts / "DejaVuSans-Bold.ttf"))
            self.family, self.unicode = "dejavu", True
        else:
            self.family, self.unicode = "helvetica", False
        footer = self.text(f"{title} - report made {made}")
        family = self.family

        def draw_footer() -> None:
            self.pdf.set_y(-10)
            self.pdf.set_font(family, "", 7)
            self.pdf.set_text_color(110, 110, 110)
            self.pdf.cell(0, 4, f"{footer} - page {self.pdf.page_no()}", align="C")
            self.pdf.set_text_color(0, 0, 0)

        self.pdf.footer = draw_footer  # type: ignore[method-assign]
        self.pdf.add_page()

    @property
    def width(self) -> float:
        return float(self.pdf.epw)

    def text(self, s: Any) -> str:
        out = str(s)
        if self.unicode:
            return out
        return out.translate(_ASCII).encode("latin-1", "replace").decode("latin-1")

    def font(self, size: float, bold: bool = False) -> None:
        self.pdf.set_font(self.family, "B" if bold else "", size)

    def heading(self, s: str, size: float = 13) -> None:
        self.pdf.ln(2)
        self.font(size, True)
        self.pdf.multi_cell(0, size * 0.5, self.text(s), new_x="LMARGIN", new_y="NEXT")
        self.pdf.ln(1)

    def para(self, s: str, size: float = 9, rgb: tuple[int, int, int] = (0, 0, 0)) -> None:
        self.font(size)
        self.pdf.set_text_color(*rgb)
        self.pdf.multi_cell(0, size * 0.45, self.text(s), new_x="LMARGIN", new_y="NEXT")
        self.pdf.set_text_color(0, 0, 0)

    def table(self, header: list[str], rows: list[list[Any]], widths: list[float], size: float = 7.5) -> None:
        self.font(size)
        self.pdf.set_fill_color(255, 255, 255)
        with self.pdf.table(
            col_widths=tuple(widths),
            width=self.width,
            text_align="LEFT",
            line_height=size * 0.5,
            first_row_as_headings=True,
            headings_style=_heading_style(self.family, size),
        ) as table:
            table.row([self.text(h) for h in header])
            for r in rows:
                table.row([self.text(_fmt(v)) for v in r])
        self.pdf.ln(1)


def _heading_style(family: str, size: float) -> Any:
    from fpdf.fonts import FontFace

    return FontFace(family=family, emphasis="BOLD", size_pt=size, fill_color=(240, 240, 240))


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "-" if not np.isfinite(v) else f"{v:.3g}"
    return str(v)


def _band_chart(doc: _Doc, rows: list[Band]) -> None:
    """The band chart of one line (the HTML's geometry): per class, the passing side green and the failing
    side red of the threshold, the healthy edge dashed, this run's value with its interval, all labelled."""
    if not rows:
        return
    pdf = doc.pdf
    row_h, label_w = 11.5, 28.0
    need = row_h * len(rows) + 8
    if pdf.get_y() + need > pdf.h - pdf.b_margin:
        pdf.add_page()
    x0, y = pdf.l_margin + label_w, pdf.get_y() + 3
    w = doc.width - label_w - 36  # the right 32 mm hold the healthy numbers in words
    lo, hi = rows[0].axis

    def x(v: float) -> float:
        return x0 + (v - lo) / (hi - lo) * w

    for b in rows:
        top = y + 1.5
        sides = b.sides(x0, x0 + w, x)
        if sides is not None:
            for (a, z), fill in zip(sides, ((227, 244, 232), (251, 228, 228))):
                pdf.set_fill_color(*fill)
                pdf.rect(a, top, max(z - a, 0), 4, style="F")
        else:
            pdf.set_fill_color(243, 243, 243)
            pdf.rect(x0, top, w, 4, style="F")
        if b.healthy is not None:
            h0, h1 = x(b.healthy[0]), x(b.healthy[1])
            pdf.set_fill_color(140, 190, 145)
            pdf.rect(h0, top + 1, max(h1 - h0, 0.6), 2, style="F")
        doc.font(7)
        pdf.set_xy(pdf.l_margin, top)
        pdf.cell(label_w - 2, 4, doc.text(b.class_name), align="R")
        if b.healthy_edge is not None:
            h = x(b.healthy_edge)
            pdf.set_draw_color(46, 125, 50)
            pdf.set_dash_pattern(dash=0.8, gap=0.6)
            pdf.line(h, top - 0.5, h, top + 4.5)
            pdf.set_dash_pattern()
        doc.font(5.5)
        pdf.set_text_color(46, 125, 50)
        for j, words in enumerate(b.legend()):
            pdf.text(x0 + w + 2, top + 1.5 + 2.6 * j, doc.text(words))
        pdf.set_text_color(0, 0, 0)
        if b.threshold is not None:
            t = x(b.threshold)
            pdf.set_draw_color(30, 30, 30)
            pdf.set_line_width(0.6)
            pdf.line(t, top - 1, t, top + 5)
            pdf.set_line_width(0.2)
            doc.font(5.5)
            pdf.set_text_color(30, 30, 30)
            pdf.text(t - 6, top - 1.4, doc.text(b.threshold_words()))
        rgb = STATUS_RGB.get(b.status, (119, 119, 119))
        pdf.set_draw_color(*rgb)
        pdf.set_fill_color(*rgb)
        if b.low is not None and b.high is not None:
            pdf.set_line_width(0.5)
            pdf.line(x(b.low), top + 2, x(b.high), top + 2)
            pdf.set_line_width(0.2)
        v = x(b.value)
        pdf.ellipse(v - 1.2, top + 0.8, 2.4, 2.4, style="F")
        doc.font(5.5)
        pdf.set_text_color(*rgb)
        label = doc.text(b.value_words())
        lx = min(max(v - pdf.get_string_width(label) / 2, x0), x0 + w - pdf.get_string_width(label))
        pdf.text(lx, top + 7.0, label)
        pdf.set_text_color(0, 0, 0)
        pdf.set_draw_color(0, 0, 0)
        y += row_h
    pdf.set_draw_color(150, 150, 150)
    pdf.line(x0, y, x0 + w, y)
    doc.font(5.5)
    for t in ticks(lo, hi):
        pdf.line(x(t), y, x(t), y + 1)
        pdf.text(x(t) - 2, y + 3.5, f"{t:.3g}")
    pdf.set_draw_color(0, 0, 0)
    pdf.set_xy(pdf.l_margin, y + 5)


def _image(doc: _Doc, rgb: np.ndarray, x: float, y: float, w: float) -> float:
    """Place ``rgb`` (JPEG) at (x, y), ``w`` mm wide; returns its height in mm."""
    h = w * rgb.shape[0] / rgb.shape[1]
    doc.pdf.image(io.BytesIO(jpeg_bytes(rgb)), x=x, y=y, w=w, h=h)
    return h


def render_pdf(
    report: VerificationReport | Mapping[str, Any],
    *,
    title: str = "Attention-map verification",
    displays: Mapping[str, np.ndarray] | None = None,
    made: str | None = None,
) -> bytes:
    """The PDF report (bytes) of a :class:`~verification.verdict.VerificationReport` or its result document.

    ``displays`` maps image names to uint8 pictures (else the images are read from their paths); ``made`` the
    time the report is made (**default** now)."""
    from verification.verdict import LINE_NAMES, STATUS_LABELS

    report = as_report(report)
    made = made or made_now()
    doc = _Doc(title, made)
    pdf = doc.pdf

    # ---------------------------------------------------------------------------------------- the verdict
    doc.heading(title, 16)
    computed = report.provenance.get("created", "-")
    doc.para(f"Report made {made} · verdict computed {computed}", 8, (90, 90, 90))
    pdf.ln(2)
    head = report.label
    if report.deciding_line:
        head += f" — decided by {report.deciding_line} {LINE_NAMES.get(report.deciding_line, '')}".rstrip()
    counts = (
        f"accuracy {accuracy_text(report)}; {report.n_images} images, "
        f"{report.n_not_assessable} not assessable"
        + (f", {len(report.errors)} unreadable" if report.errors else "")
    )
    pdf.set_fill_color(*_VERDICT_FILL[report.verdict])
    doc.font(13, True)
    pdf.multi_cell(0, 7, doc.text(head), fill=True, new_x="LMARGIN", new_y="NEXT")
    doc.font(9)
    pdf.multi_cell(0, 4.5, doc.text(report.reason), fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 4.5, doc.text(counts), fill=True, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    for m in report.missing:
        doc.para(f"What is missing: {m}", 8.5, (140, 90, 0))
    for w in report.warnings:
        doc.para(f"Warning: {w}", 8.5, (140, 90, 0))
    doc.heading(f"Verdict per {unit(report)}", 11)
    doc.table(CLASS_COLUMNS, class_rows(report), [18, 22, 14, 112, 16])

    # ---------------------------------------------------------------------------------------- the lines
    if report.lines:
        doc.heading("Evidence lines", 13)
    for ln in report.lines:
        votes = "votes" if ln.votes else "does not vote"
        doc.font(10, True)
        pdf.set_text_color(*STATUS_RGB.get(ln.status, (0, 0, 0)))
        pdf.multi_cell(
            0,
            5,
            doc.text(f"{ln.key} {ln.name}: {STATUS_LABELS[ln.status]} ({votes})"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_text_color(0, 0, 0)
        if ln.sentence:
            doc.para(ln.sentence, 8)
        if ln.calibration:
            sep = (
                f"; separation from known-bad AUROC {ln.separation:.2f}" if ln.separation is not None else ""
            )
            doc.para(f"Threshold: {ln.calibration}{sep}", 7.5, (90, 90, 90))
        if ln.per_class:
            doc.table(
                ["class", "status", "value", "95 % interval", "threshold", "images"],
                [
                    [
                        c.class_name,
                        STATUS_LABELS[c.status],
                        c.value,
                        "-" if c.low is None or c.high is None else f"[{c.low:.3f}, {c.high:.3f}]",
                        None
                        if c.threshold is None
                        else f"{'≥' if c.higher_is_better else '≤'} {c.threshold:.3f}",
                        c.n,
                    ]
                    for c in ln.per_class
                ],
                [24, 40, 20, 40, 30, 22],
            )
            if ln.key != "E0":  # a pass rate without a threshold: the table says it all
                _band_chart(doc, bands(ln))
        pdf.ln(1)

    # ---------------------------------------------------------------------------------------- examples
    pictures = example_pictures(report, displays)
    if pictures:
        pdf.add_page()
        doc.heading("Example images: attention over the image, and the class reference", 12)
        doc.para(
            "The images where the most attention lies outside the anatomy. Each sentence states only what "
            "the numbers measured on that image support.",
            8,
            (90, 90, 90),
        )
        col_w = 52.0
        for ex, picture, ref in pictures:
            sentence = example_sentence(report, ex)
            needed = col_w + 14
            if pdf.get_y() + needed > pdf.h - pdf.b_margin:
                pdf.add_page()
            y = pdf.get_y() + 1
            x = pdf.l_margin
            h = 0.0
            if picture is not None:
                h = _image(doc, picture, x, y, col_w)
            if ref is not None:
                h = max(h, _image(doc, ref, x + col_w + 3, y, col_w * 0.6))
            text_x = x + col_w * 1.6 + 7
            pdf.set_xy(text_x, y)
            doc.font(8, True)
            pdf.multi_cell(
                doc.width - (text_x - x), 4, doc.text(Path(ex.image).name), new_x="LEFT", new_y="NEXT"
            )
            doc.font(8)
            pdf.multi_cell(doc.width - (text_x - x), 3.8, doc.text(sentence), new_x="LEFT", new_y="NEXT")
            ref_note = (
                f"reference map of {ex.class_name}" if ref is not None else "no reference map for this class"
            )
            doc.font(6.5)
            pdf.set_text_color(90, 90, 90)
            pdf.multi_cell(doc.width - (text_x - x), 3.2, doc.text(ref_note), new_x="LEFT", new_y="NEXT")
            pdf.set_text_color(0, 0, 0)
            pdf.set_xy(pdf.l_margin, max(pdf.get_y(), y + h) + 3)

    # ---------------------------------------------------------------------------------------- provenance
    excluded = [im for im in report.images if not im.assessable]
    if excluded:
        doc.heading(f"Images that could not be assessed ({len(excluded)})", 11)
        doc.table(
            ["image", "why"],
            [[im.name, im.not_assessable_reason] for im in excluded[:40]],
            [40, 142],
        )
        if len(excluded) > 40:
            doc.para(f"... and {len(excluded) - 40} more (see the HTML report or the JSON).", 7.5)
    doc.heading("Provenance", 11)
    prov = report.provenance
    model = prov.get("model", {}) if isinstance(prov.get("model"), Mapping) else {}
    bundle = prov.get("bundle", {}) if isinstance(prov.get("bundle"), Mapping) else {}
    rows = [
        [
            "model",
            f"{model.get('name', '-')} ({model.get('architecture', '-')}), "
            f"sha256 {model.get('content_hash', '-')}",
        ],
        ["classes", ", ".join(map(str, model.get("class_names", []))) or "-"],
        [
            "reference bundle",
            f"{bundle.get('method', '-')} at {bundle.get('layer', '-')}, "
            f"created {bundle.get('created', '-')}",
        ],
        ["calibration", bundle.get("calibration") or "-"],
        ["anatomy", prov.get("anatomy") or "-"],
        [
            "software",
            f"verification {prov.get('package', '-')}, torch {prov.get('torch', '-')}, "
            f"python {prov.get('python', '-')}",
        ],
    ]
    doc.table(["", ""], rows, [32, 150])
    out = pdf.output()
    return bytes(out)
