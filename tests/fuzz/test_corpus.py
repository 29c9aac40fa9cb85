"""Issue #14: every hostile input of the corpus either loads or raises a typed error, within time and memory.

The corpus (:mod:`tests.fuzz.corpus`) is written into a temporary folder and run by :mod:`tests.fuzz.runner`:
each input goes through ``load_image`` / the dashboard's upload path / ``load_model`` / ``compute_metrics`` /
``compute_cams`` / the CLI in a forked child whose address space is capped (+3 GiB over what the imports
mapped) and whose time is limited. A result counts as a pass when it is

* ``loaded`` — and the result is sane (finite pixels in [0, 1], a model whose outputs on a real image are
  finite, metric values in range or NaN with a reason, CLI error rows for every unreadable image), or
* ``typed error`` — a :mod:`verification.errors` exception (CLI: exit 1 and one ``error:`` line on stderr)
  with a message under 2,000 characters,

and no payload marker file exists and nothing changed outside the input's output folder. The other outcomes
(``silently wrong``, ``untyped crash``, ``hang``, ``blow-up``: resident growth above the bound or an
allocation failure) fail. ``pytest -s`` prints the table per category; it is also written to
``test-artifacts/fuzz-summary.txt``, and every input's outcome, time and memory to ``fuzz-items.tsv``.

Inputs that fail today and are being fixed are marked ``xfail(strict=True)`` in :data:`KNOWN_FAILING`: the
mark goes when the fix lands (strict, so the test turns red until then).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz import corpus, runner

pytestmark = [pytest.mark.slow]

ARTIFACTS = corpus.ROOT / "test-artifacts"

# id → (reason, who fixes it). Remove an entry when its fix lands (strict xfail turns red).
KNOWN_FAILING: dict[str, str] = {}


def _aggregate(raws: list[dict[str, Any]]) -> tuple[dict[str, runner.Verdict], list[runner.Verdict]]:
    """One verdict per corpus item (a multi-file item takes its worst file) and every per-file verdict."""
    expect = {i.id: i.expect for i in corpus.ITEMS}
    every = [runner.verdict(r, expect[r.get("parent") or r["id"]]) for r in raws]
    by_item: dict[str, list[runner.Verdict]] = defaultdict(list)
    for raw, v in zip(raws, every):
        by_item[raw.get("parent") or raw["id"]].append(v)
    out = {}
    for item_id, vs in by_item.items():
        bad = [v for v in vs if v.outcome not in runner.OK]
        if len(vs) == 1:
            out[item_id] = vs[0]
            continue
        counts = Counter(v.outcome for v in vs)
        worst = max(vs, key=lambda v: v.growth_mb)
        out[item_id] = runner.Verdict(
            id=item_id,
            category=vs[0].category,
            outcome=bad[0].outcome if bad else "loaded",
            detail=(f"{bad[0].id}: {bad[0].detail}; " if bad else "")
            + ", ".join(f"{n} {k}" for k, n in counts.items()),
            seconds=sum(v.seconds for v in vs),
            peak_mb=max(v.peak_mb for v in vs),
            growth_mb=worst.growth_mb,
        )
    return out, every


def _run(base: Path) -> list[dict[str, Any]]:
    root = base / "corpus"
    t0 = time.monotonic()
    specs = corpus.run_specs(root)
    built = time.monotonic() - t0
    raws = runner.run_corpus(specs, root)
    (base / "timing.json").write_text(json.dumps({"build_s": built, "run_s": time.monotonic() - t0 - built}))
    return raws


@pytest.fixture(scope="module")
def fuzz(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, runner.Verdict], list[runner.Verdict], dict]:
    """The corpus, run once per test run (also under pytest-xdist)."""
    raws, base = runner.once_per_run(tmp_path_factory, "fuzz", _run)
    per_item, every = _aggregate(raws)
    return per_item, every, json.loads((base / "timing.json").read_text())


def _param(item: corpus.Item) -> Any:
    if item.id in KNOWN_FAILING:
        return pytest.param(item.id, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[item.id]))
    return item.id


@pytest.mark.parametrize("item_id", [_param(i) for i in corpus.ITEMS])
def test_hostile_input(
    fuzz: tuple[dict[str, runner.Verdict], list[runner.Verdict], dict], item_id: str
) -> None:
    per_item, _, _ = fuzz
    v = per_item[item_id]
    assert v.outcome in runner.OK, f"{item_id}: {v.outcome} — {v.detail}"


def test_every_item_ran_and_no_payload_ran(
    fuzz: tuple[dict[str, runner.Verdict], list[runner.Verdict], dict],
) -> None:
    per_item, every, timing = fuzz
    assert set(per_item) == {i.id for i in corpus.ITEMS}
    payloads = [v for v in every if "payload ran" in v.detail]
    assert not payloads, payloads
    table = runner.summary(per_item, every, timing)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "fuzz-summary.txt").write_text(table)
    rows = ["id\tcategory\toutcome\tseconds\tpeak_rss_mb\tgrowth_mb\tdetail"]
    rows += [
        f"{v.id}\t{v.category}\t{v.outcome}\t{v.seconds:.2f}\t{v.peak_mb:.0f}\t{v.growth_mb:.0f}\t"
        + v.detail.replace("\t", " ").replace("\n", " ")[:300]
        for v in every
    ]
    (ARTIFACTS / "fuzz-items.tsv").write_text("\n".join(rows) + "\n")
    print("\n" + table)
