"""Per-name keyword options checked against a registry: ``{name: {keyword: value}}`` as the CAM engine
(``compute_cams(options=...)``) and the metrics (``compute_metrics(options=...)``) take them."""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from typing import Any

from verification.errors import InvalidInputError


def check_keyword_options(
    options: object,
    *,
    kind: str,
    known: Container[str],
    allowed: Callable[[str], set[str]],
    known_hint: str = "",
) -> dict[str, dict[str, Any]]:
    """``options`` as plain dicts: a mapping from registered names (``known``; ``kind`` says what they are,
    e.g. "method") to mappings of the keywords each takes (``allowed(name)``). InvalidInputError otherwise,
    with ``known_hint`` (e.g. "; known: [...]") after an unknown name. None → no options."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidInputError(
            f"options must map {kind} names to keyword options, got {type(options).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for name, opts in options.items():
        if name not in known:
            raise InvalidInputError(f"options given for an unknown {kind} {str(name)[:40]!r}{known_hint}")
        if not isinstance(opts, Mapping):
            raise InvalidInputError(f"options[{name!r}] must be a mapping of keyword options")
        ok = allowed(name)
        bad = [str(k)[:40] for k in opts if k not in ok]
        if bad:
            raise InvalidInputError(
                f"{kind} {name!r} takes no option(s) {bad[:5]}; it takes: {', '.join(sorted(ok)) or 'none'}"
            )
        out[name] = dict(opts)
    return out
