"""Folders on the server machine, readable from the dashboard only where the operator allows it.

The Dataset check can read "a folder on this machine". That folder is on the *server*: any browser user who
can reach the app would otherwise make it list and read any path the server process can (``/etc``, other
users' data, mounted volumes). So the option exists only when whoever starts the app names the folders it
may read, and it is off by default::

    VERIFICATION_FOLDER_ROOTS=/data/chest:/srv/studies streamlit run dashboard.py

(``os.pathsep``-separated: ``:`` on Linux/macOS, ``;`` on Windows). Each root must be an existing directory;
others are ignored with a warning in the server log. The variable belongs to the server process: a browser
user cannot set it.

Every folder typed in the page is resolved (``..`` and symbolic links followed, relative paths taken from the
first root) and must lie inside a resolved root; every image found inside it is resolved again and dropped
when it is a link that leads out of the roots. What remains outside this module's reach: a user with write
access *inside* a root can swap a file for a link between the check and the read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path

from verification.errors import ImageLoadError

ENV = "VERIFICATION_FOLDER_ROOTS"
MAX_PATH_CHARS = 4096
log = logging.getLogger(__name__)


def allowed_roots() -> tuple[Path, ...]:
    """The resolved root folders the operator allows, in the order given; empty when the option is off."""
    roots: list[Path] = []
    for part in os.environ.get(ENV, "").split(os.pathsep):
        if not part.strip():
            continue
        try:
            root = Path(part.strip()).expanduser().resolve(strict=True)
        except (OSError, RuntimeError):
            log.warning("%s: %r does not exist; ignored", ENV, part)
            continue
        if not root.is_dir():
            log.warning("%s: %r is not a directory; ignored", ENV, part)
            continue
        if root not in roots:
            roots.append(root)
    return tuple(roots)


def enabled() -> bool:
    """Whether the dashboard may read folders on the server at all."""
    return bool(allowed_roots())


def describe_roots() -> str:
    roots = allowed_roots()
    return ", ".join(f"`{r}`" for r in roots) if roots else "none"


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_folder(text: str) -> Path:
    """The folder ``text`` names, resolved, if it lies inside an allowed root; ImageLoadError otherwise.

    The message never says whether a path outside the roots exists.
    """
    roots = allowed_roots()
    if not roots:
        raise ImageLoadError(
            "Reading folders on the server is turned off. The operator can allow chosen folders by starting "
            f"the app with {ENV}=/path/one{os.pathsep}/path/two."
        )
    text = (text or "").strip()
    if not text:
        raise ImageLoadError("Type the path of a folder inside " + describe_roots() + ".")
    if len(text) > MAX_PATH_CHARS or "\x00" in text:
        raise ImageLoadError("That is not a usable folder path.")
    path = Path(text)
    if not path.is_absolute():
        path = roots[0] / path
    try:
        resolved = path.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        raise ImageLoadError("That folder path cannot be resolved.") from None
    if not _within(resolved, roots):
        raise ImageLoadError(f"Only folders inside {describe_roots()} can be read on this server.")
    if not resolved.is_dir():
        raise ImageLoadError(f"'{text[:200]}' is not a folder inside {describe_roots()}.")
    return resolved


def keep_within_roots(paths: Iterable[Path]) -> tuple[list[Path], int]:
    """The paths whose resolved target lies inside an allowed root, and how many were dropped (links that lead
    out of the roots, or that cannot be resolved)."""
    roots = allowed_roots()
    kept: list[Path] = []
    dropped = 0
    for p in paths:
        try:
            ok = _within(Path(p).resolve(strict=True), roots)
        except (OSError, RuntimeError):
            ok = False
        if ok:
            kept.append(Path(p))
        else:
            dropped += 1
    return kept, dropped
