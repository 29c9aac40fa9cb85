"""Atomic outputs: a file renamed into place when complete, a folder built beside its target and
swapped in; the JSON encoder of every result."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from verification.cli.common import CliError


@contextlib.contextmanager
def atomic_file(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; renamed onto ``target`` on success, deleted on failure."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the output gets the usual mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(target: str | Path, text: str) -> Path:
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(target)


@contextlib.contextmanager
def atomic_dir(target: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside ``target``; on success it replaces ``target``, on failure it goes.

    ``target`` may be absent or an empty folder; anything else needs ``force`` (then it is replaced whole).
    """
    target = Path(target)
    check_output_dir(target, force=force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_umask())
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(staging, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_dir(target: Path, *, force: bool) -> None:
    """Refuse (CliError) an output folder that exists with content unless ``force``."""
    if target.exists() and not force and not (target.is_dir() and not any(target.iterdir())):
        raise CliError(
            f"{target} already exists and is not an empty folder; choose another path or add --force"
        )


def _swap_in(staging: Path, target: Path) -> None:
    if target.is_dir() and not any(target.iterdir()):
        target.rmdir()
    if not target.exists() and not target.is_symlink():
        os.replace(staging, target)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
    old.rmdir()
    os.replace(target, old)
    os.replace(staging, target)
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=_json_default, allow_nan=True) + "\n"
