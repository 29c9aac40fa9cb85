"""The command line: ``python -m verification <command>``, a thin layer over the backend's public API.

Exit codes (scripts can rely on them):

* ``0`` — success; for ``verify``, the verdict is SUITABLE.
* ``1`` — the run failed (a file that cannot be read, a model that does not load, a bad bundle, ...): one
  clear line on stderr, no traceback unless ``--debug``.
* ``2`` — bad usage (unknown option, missing argument, invalid value), reported by argparse.
* ``3`` — ``verify`` completed and the verdict is UNSUITABLE (a decisive evidence line failed).
* ``4`` — ``verify`` completed and the verdict is CANNOT VERIFY (what is missing is printed and in the JSON).
* ``130`` — interrupted (Ctrl-C / SIGTERM); nothing partial is left behind.

Unreadable images do not stop ``cam`` or ``verify``: each becomes an error row (in the manifest / the table)
and is left out of the verdict; ``--strict`` turns the first one into a failure (exit 1) instead.

Outputs are written atomically: a single file goes to a hidden temporary name in the target folder and is
renamed into place when complete; a multi-file output (``cam --out DIR``, a bundle folder) is built in a
hidden staging folder beside the target, its ``manifest.json`` written last, and the folder renamed into
place. On any failure the temporary files are removed, so an output that exists is complete.

One concern per module; every public name is re-exported here (``from verification.cli import main``):
:mod:`~verification.cli.parser` (the argument parser), :mod:`~verification.cli.main` (the entry point, errors
and exit codes), :mod:`~verification.cli.common` (what the commands share), :mod:`~verification.cli.outputs`
(atomic files and folders, JSON), and the handlers by command group: :mod:`~verification.cli.commands`
(``methods``, ``layers``, ``report``, ``consistency``), :mod:`~verification.cli.cam` (``cam``) and
:mod:`~verification.cli.verify` (``reference build``, ``verify`` and its result document).
"""

from __future__ import annotations

from verification.cli.cam import cmd_cam
from verification.cli.commands import cmd_consistency, cmd_layers, cmd_methods, cmd_report
from verification.cli.common import (
    EXIT_CANNOT_VERIFY,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNSUITABLE,
    EXIT_USAGE,
    VERDICT_EXIT,
    CliError,
)
from verification.cli.main import main
from verification.cli.outputs import atomic_dir, atomic_file, check_output_dir, dumps, write_text_atomic
from verification.cli.parser import build_parser
from verification.cli.verify import cmd_reference_build, cmd_verify, verify_document, verify_table

__all__ = [
    "EXIT_CANNOT_VERIFY",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNSUITABLE",
    "EXIT_USAGE",
    "VERDICT_EXIT",
    "CliError",
    "atomic_dir",
    "atomic_file",
    "build_parser",
    "check_output_dir",
    "cmd_cam",
    "cmd_consistency",
    "cmd_layers",
    "cmd_methods",
    "cmd_reference_build",
    "cmd_report",
    "cmd_verify",
    "dumps",
    "main",
    "verify_document",
    "verify_table",
    "write_text_atomic",
]
