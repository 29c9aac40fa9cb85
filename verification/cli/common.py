"""What every command shares: exit codes, the one-line error, loading the model, engine options."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verification.errors import VerificationError

if TYPE_CHECKING:
    from verification.batch import ModelSpec, Row
    from verification.engines import EngineOptions
    from verification.io.records import LoadedModel
    from verification.verdict import VerificationReport

log = logging.getLogger("verification.cli")


EXIT_OK = 0


EXIT_FAILURE = 1


EXIT_USAGE = 2


EXIT_UNSUITABLE = 3


EXIT_CANNOT_VERIFY = 4


EXIT_INTERRUPTED = 130


VERDICT_EXIT = {"suitable": EXIT_OK, "unsuitable": EXIT_UNSUITABLE, "cannot_verify": EXIT_CANNOT_VERIFY}


class CliError(VerificationError):
    """A failure reported as one line (exit 1): an output in the way, a bad image under --strict, ..."""


def class_indices(labels: Sequence[str], class_names: Sequence[str], source: str) -> list[int]:
    """Class names (or indices written as numbers) → indices into the model's classes."""
    out = []
    for label in labels:
        if label in class_names:
            out.append(list(class_names).index(label))
        elif label.isdigit() and int(label) < len(class_names):
            out.append(int(label))
        else:
            raise CliError(f"{source}: label {label!r} is not one of the model's classes {list(class_names)}")
    return out


def load_model_args(args: argparse.Namespace) -> tuple[ModelSpec, LoadedModel]:
    """The model named by ``model``, ``--sidecar``, ``--architecture`` and ``--trust``: its spec (what a
    worker loads) and the model loaded here."""
    from verification.batch import ModelSpec

    spec = ModelSpec(path=args.model, sidecar=args.sidecar, architecture=args.architecture, trust=args.trust)
    if not Path(spec.path).exists():
        raise CliError(f"model file {spec.path} does not exist")
    return spec, spec.load()


def engine_options(args: argparse.Namespace) -> EngineOptions:
    """Engine options from ``--engine``, ``--batch-size``, ``--workers``, ``--ray-address`` and
    ``--ray-cpus`` (a command without the engine options runs locally)."""
    from verification.engines import EngineOptions

    return EngineOptions(
        engine=getattr(args, "engine", "local"),
        batch_size=args.batch_size,
        workers=args.workers,
        ray_address=getattr(args, "ray_address", None),
        ray_num_cpus=getattr(args, "ray_cpus", 2),
    )


def progress_flag(args: argparse.Namespace) -> bool | None:
    """Progress bars: never with ``--quiet``, else when stderr is a terminal (``None``)."""
    return False if args.quiet else None


def check_row(row: Row[Any], args: argparse.Namespace) -> None:
    """An error row: a warning, or with ``--strict`` the failure of the run."""
    if row.error:
        if args.strict:
            raise CliError(f"{row.path}: {row.error} (--strict stops at the first unreadable image)")
        log.warning("skipped %s: %s", row.path, row.error)


MAX_RESULT_JSON_BYTES = 64 << 20
"""The largest verify result JSON that ``report`` and ``cam --pacs-verdict`` read."""


def read_verify_result(path: str | Path, what: str) -> VerificationReport:
    """A verify result written by ``verify --json`` from a file the user gives, not trusted: read by
    ``io.files.read_regular_file`` (at most :data:`MAX_RESULT_JSON_BYTES`), parsed by ``io.safejson``
    (nesting, number length; NaN allowed, as ``verify`` writes it), and a document that is not a complete
    verify result is a BundleError naming the file (never an internal error)."""
    from verification.errors import BundleError
    from verification.io.files import read_json_file
    from verification.verdict import VerificationReport as Report

    source = Path(path)
    doc = read_json_file(
        source, kind=what, advice="give the JSON file written by 'verify --json'",
        max_bytes=MAX_RESULT_JSON_BYTES, error=BundleError, max_depth=64, allow_nan=True,
    )  # fmt: skip
    if not isinstance(doc, dict):
        raise BundleError(f"{what} '{source}' is not a JSON verify result (not an object)")
    try:
        return Report.from_document(doc)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise BundleError(
            f"{what} '{source}' is not a complete verify result ({type(exc).__name__}: {str(exc)[:160]})"
        ) from exc
