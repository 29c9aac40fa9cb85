"""JSON from untrusted files, parsed with limits: size, nesting depth and length of each number.

``json.loads`` alone raises ``RecursionError`` on deep nesting and ``ValueError`` on integers of more than
4,300 digits; both are checked here first, and every failure becomes the caller's typed error.
"""

from __future__ import annotations

import json
from typing import Any

from verification.errors import InputTooLargeError, VerificationError

__all__ = ["bounded_text", "loads_bounded"]

MAX_NUMBER_CHARS = 40


def bounded_text(value: object, limit: int = 80) -> str:
    """``repr`` of a value cut to ``limit`` characters, for error messages that must stay short."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text):,} characters)"


def _max_depth(text: str, limit: int) -> int:
    """Nesting depth of brackets outside strings; stops counting once ``limit`` is passed."""
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _number(kind: str, error: type[VerificationError], what: str) -> Any:
    def parse(token: str) -> Any:
        if len(token) > MAX_NUMBER_CHARS:
            raise error(
                f"{what} holds a number of {len(token):,} characters; at most {MAX_NUMBER_CHARS} are accepted"
            )
        return int(token) if kind == "int" else float(token)

    return parse


def _constant(error: type[VerificationError], what: str) -> Any:
    def parse(token: str) -> Any:
        raise error(f"{what} holds {token}, which is not valid JSON; use a finite number")

    return parse


def loads_bounded(
    data: bytes | str,
    what: str,
    *,
    error: type[VerificationError],
    max_bytes: int = 1 << 20,
    max_depth: int = 32,
    allow_nan: bool = False,
) -> Any:
    """Parse ``data`` as JSON, refusing (with ``error``) more than ``max_bytes``, nesting deeper than
    ``max_depth``, numbers longer than 40 characters, NaN/Infinity literals (unless ``allow_nan``: a file this
    project wrote with ``allow_nan=True``) and invalid UTF-8 or JSON."""
    if len(data) > max_bytes:
        raise InputTooLargeError(f"{what} is {len(data):,} bytes; at most {max_bytes:,} are accepted")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    depth = _max_depth(text, max_depth)
    if depth > max_depth:
        raise error(f"{what} nests deeper than {max_depth} levels; flatten it")
    try:
        return json.loads(
            text,
            parse_int=_number("int", error, what),
            parse_float=_number("float", error, what),
            parse_constant=float if allow_nan else _constant(error, what),
        )
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    except (RecursionError, ValueError) as exc:
        raise error(f"{what} cannot be parsed: {type(exc).__name__}: {str(exc)[:120]}") from exc
