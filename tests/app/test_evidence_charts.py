"""The dashboard's band chart (ui.evidence.band_card): the reports' own SVG band chart as a picture under the
line's title, the passing side of each class's threshold shaded green and the failing side red, on the side
the reports use (verification.report's Band.sides)."""

from __future__ import annotations

import base64
import re
import xml.etree.ElementTree as ET
from dataclasses import replace

from tests.app.report_fixture import E3
from ui import evidence
from verification.report import band_svg, bands
from verification.verdict import LineResult

SVG = "{http://www.w3.org/2000/svg}"


def _picture(line: LineResult) -> tuple[str, ET.Element]:
    """The card's title and its picture's SVG, decoded from the data URI."""
    card = evidence.band_card(line)
    assert card is not None
    title = re.search(r"<figcaption>(.*?)</figcaption>", card)
    data = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', card)
    assert title is not None, card
    assert data is not None, card
    svg = base64.b64decode(data.group(1)).decode()
    assert svg == band_svg(bands(line), width=evidence.BAND_WIDTH), "the reports' chart, unchanged"
    return title.group(1), ET.fromstring(svg)


def _sides(root: ET.Element) -> list[tuple[str, float]]:
    """Per shaded span, in drawing order: passing or failing side, and its left edge."""
    return [
        (rect.findtext(f"{SVG}title") or "", float(rect.get("x", "nan")))
        for rect in root.iter(f"{SVG}rect")
        if rect.findtext(f"{SVG}title") in ("passing side", "failing side")
    ]


def test_lower_is_better_passes_below_the_threshold() -> None:
    title, root = _picture(E3)  # E3's classes (normal, nodule): threshold 0.15, lower is better
    assert title.startswith("E3 reliance on evidence outside the anatomy (failed")
    sides = _sides(root)
    assert [s for s, _ in sides] == ["passing side", "failing side"] * 2
    assert all(passing[1] < failing[1] for passing, failing in zip(sides[::2], sides[1::2], strict=True))


def test_higher_is_better_passes_above_the_threshold() -> None:
    flipped = replace(E3, per_class=tuple(replace(c, higher_is_better=True) for c in E3.per_class))
    _, root = _picture(flipped)
    sides = _sides(root)
    assert [s for s, _ in sides] == ["passing side", "failing side"] * 2
    assert all(passing[1] > failing[1] for passing, failing in zip(sides[::2], sides[1::2], strict=True))


def test_a_line_without_a_measured_value_has_no_chart() -> None:
    empty = replace(E3, per_class=tuple(replace(c, value=None) for c in E3.per_class))
    assert evidence.band_card(empty) is None
    assert evidence.band_cards([empty]) == ""
    assert evidence.band_cards([empty, E3]).count("<figure") == 1
