"""The guided story (pages/story.py) with Streamlit's AppTest: three chapters in order, each with the verdict
the demo's ground truth expects, its sentence and its numbers one click away; and Model B off by default."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.app.conftest import DASHBOARD

pytestmark = pytest.mark.usefixtures("navigation_only")


def test_the_story_tells_three_chapters_with_their_verdicts() -> None:
    at = AppTest.from_file(str(DASHBOARD), default_timeout=600).run()
    assert not at.toggle(key="model_b_enabled").value, "model B is off by default"
    at.switch_page("pages/story.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert [h.value for h in at.header] == [
        "1 · A sound model",
        "2 · A shortcut model",
        "3 · An out-of-distribution film",
    ]
    banners = [*at.success, *at.error, *at.warning]
    verdicts = [b.value for b in banners if " model on " in b.value]
    assert len(verdicts) == 3, verdicts
    by_chapter = sorted(verdicts, key=lambda v: ("Test set" not in v, "token" not in v))
    assert by_chapter[0].startswith("**sound model on Test set (in distribution): SUITABLE")
    assert by_chapter[1].startswith(
        "**shortcut_token model on Cue matches the class: token outside the lungs: UNSUITABLE — decided by E3"
    )
    assert by_chapter[2].startswith(
        "**sound model on Out of distribution (not chest films): CANNOT VERIFY — decided by E0"
    )
    assert not any("This chapter was written for" in w.value for w in at.warning), "the story holds"
    sentences = [m.value for m in at.markdown if m.value.startswith(("Predicted", "Not assessed"))]
    assert len(sentences) == 3, sentences
    assert "attention peaks" in sentences[0]
    assert "the prediction changes when everything outside the lungs is removed" in sentences[1]
    assert sentences[2].startswith("Not assessed:")
    assert any(e.label == "The numbers behind this sentence" for e in at.expander)
