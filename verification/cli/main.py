"""The entry point: parse, run the command, turn failures into one line and an exit code."""

from __future__ import annotations

import logging
import signal
import sys
import warnings
from collections.abc import Sequence
from types import FrameType

from verification.cli.common import EXIT_FAILURE, EXIT_INTERRUPTED
from verification.cli.parser import build_parser
from verification.errors import VerificationError


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
    )
    if args.quiet:
        logging.getLogger().setLevel(logging.ERROR)
    for handler in logging.getLogger().handlers:  # -q also for libraries that set their own logger's level
        if getattr(handler, "stream", None) is sys.stderr:  # when imported later (pydicom's tag warnings)
            handler.setLevel(logging.ERROR if args.quiet else logging.NOTSET)
    if not (args.verbose or args.debug):
        # torch's advisory warnings (pickle protocol, ...) are noise for a CLI user; -v shows them.
        warnings.filterwarnings("ignore", module=r"torch(\.|$)")
        # pydicom warns about malformed tags it still parses; the loader checks those itself (typed errors)
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        # NaN medians of an all-NaN metric column are reported as NaN in the table; numpy's note adds nothing.
        warnings.filterwarnings("ignore", message="All-NaN slice encountered", category=RuntimeWarning)
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        if args.debug:
            raise
        sys.stderr.write("interrupted; no partial output was kept\n")
        return EXIT_INTERRUPTED
    except (VerificationError, OSError, ValueError) as exc:
        if args.debug:
            raise
        sys.stderr.write(f"error: {_describe(exc)}\n")
        return EXIT_FAILURE
    except Exception as exc:
        if args.debug:
            raise
        sys.stderr.write(f"internal error: {_describe(exc)} (run again with --debug for the traceback)\n")
        return EXIT_FAILURE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _describe(exc: BaseException) -> str:
    from verification.errors import UntrustedFileError

    text = str(exc) or type(exc).__name__
    if isinstance(exc, UntrustedFileError):
        return f"{text} On the command line, add --trust to load it anyway, only if you trust its source."
    if isinstance(exc, (VerificationError, FileNotFoundError)):
        return text
    return f"{type(exc).__name__}: {text}"
