"""The command line: ``python -m verification <command>``, a thin layer over the backend's public API.

The commands live in :mod:`verification.cli.commands` (being split, issue #16); every public name is
re-exported here.
"""

from __future__ import annotations

from verification.cli.commands import (
    EXIT_CANNOT_VERIFY,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNSUITABLE,
    EXIT_USAGE,
    VERDICT_EXIT,
    CliError,
    atomic_dir,
    atomic_file,
    build_parser,
    check_output_dir,
    cmd_cam,
    cmd_consistency,
    cmd_layers,
    cmd_methods,
    cmd_reference_build,
    cmd_report,
    cmd_verify,
    dumps,
    main,
    verify_document,
    verify_table,
    write_text_atomic,
)

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
