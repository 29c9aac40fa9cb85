"""The ``reference build`` and ``verify`` commands, and the verify result's JSON document and table."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verification.cli.common import (
    EXIT_OK,
    VERDICT_EXIT,
    CliError,
    check_row,
    class_indices,
    engine_options,
    load_model_args,
    progress_flag,
)
from verification.cli.outputs import dumps, write_text_atomic
from verification.errors import UntrustedFileError

if TYPE_CHECKING:
    import pandas as pd

    from verification.batch import Row, VerifyJob
    from verification.io.records import LoadedModel
    from verification.reference import ReferenceBundle
    from verification.verdict import VerificationReport
    from verification.verdict.measure import ImageMeasurement


def cmd_reference_build(args: argparse.Namespace) -> int:
    from verification.batch import scan_labelled
    from verification.reference import build_reference_from_paths

    paths, labels = scan_labelled(args.data)
    _, model = load_model_args(args)
    y = class_indices(labels, model.class_names, args.data)
    _check_mask_folders(args)
    healthy = {Path(p).stem: _load_other(p, args) for p in args.healthy}
    bad = {Path(p).stem: _load_other(p, args) for p in args.bad}
    bundle, used, skipped = build_reference_from_paths(
        model, paths, y, method=args.method, layer=args.layer, correct_only=not args.all_images,
        batch_size=args.batch_size, workers=args.workers, progress=progress_flag(args),
        calibrate=not args.no_calibration, healthy=healthy, bad=bad, annotation_dir=args.annotations,
        anatomy_dir=args.anatomy,
        faithfulness=args.faithfulness,
        grid=model.input_size if args.grid == "native" else args.grid,
    )  # fmt: skip
    npz, manifest = _save_bundle(bundle, Path(args.out))
    if not args.quiet:
        counts = ", ".join(f"{n}: {int(c)}" for n, c in zip(model.class_names, bundle.counts))
        cal = "no calibration" if bundle.calibration is None else f"calibration: {bundle.calibration.scheme}"
        sys.stderr.write(
            f"reference bundle → {npz} (+ {manifest.name}); {used} of {len(paths)} images used "
            f"({counts})" + (f"; {skipped} unreadable" if skipped else "") + f"; {cal}\n"
        )
    return EXIT_OK


def _check_mask_folders(args: argparse.Namespace) -> None:
    for flag, folder in (("--annotations", args.annotations), ("--anatomy", args.anatomy)):
        if folder is not None and not Path(folder).is_dir():
            raise CliError(f"{flag} {folder} is not a folder")


def _trusts_other(path: str, args: argparse.Namespace) -> bool:
    """Whether the user opted in to unpickling this other model file (``--trust-other PATH``; ``--trust``
    covers only the main model)."""
    return Path(path).resolve() in {Path(p).resolve() for p in args.trust_other}


def _load_other(path: str, args: argparse.Namespace) -> LoadedModel:
    from verification.io.models import load_model

    if not Path(path).is_file():
        raise CliError(f"model file {path} does not exist")
    try:
        return load_model(path, trust=_trusts_other(path, args), name=Path(path).stem)
    except UntrustedFileError as exc:
        raise UntrustedFileError(f"{exc} The flag for this file is --trust-other {path}") from exc


def _bundle_files(path: Path) -> tuple[Path, Path]:
    """A bundle's ``(<stem>.npz, <stem>.json)`` from ``<stem>``, ``<stem>.npz`` or ``<stem>.json``."""
    stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
    return stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")


def _save_bundle(bundle: ReferenceBundle, out: Path) -> tuple[Path, Path]:
    """Save a bundle's two files atomically: both are written in a staging folder, the old manifest (if any)
    is removed, the arrays moved into place, and the manifest — what makes a bundle loadable — moved last."""
    npz, manifest = _bundle_files(out)
    stem = npz.with_suffix("")
    npz.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{stem.name}.", suffix=".partial", dir=npz.parent))
    try:
        written = bundle.save(staging / stem.name)
        manifest.unlink(missing_ok=True)
        os.replace(written, npz)
        os.replace(written.with_suffix(".json"), manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return npz, manifest


def cmd_verify(args: argparse.Namespace) -> int:
    from verification.batch import ModelSpec, VerifyJob, merge_verify_rows, scan_images, scan_labelled
    from verification.engines import run_job
    from verification.verdict import VerdictConfig

    labels: list[str] | None = None
    if args.labelled:
        if len(args.inputs) != 1:
            raise CliError("--labelled takes exactly one input: a folder of class subfolders or a CSV")
        paths, labels = scan_labelled(args.inputs[0])
    else:
        paths = scan_images(args.inputs)
    if not paths:
        raise CliError(f"no images found in {', '.join(args.inputs)}")
    missing = [p for p in _bundle_files(Path(args.bundle)) if not p.is_file()]
    if missing:
        raise CliError(f"reference bundle {args.bundle}: {', '.join(map(str, missing))} not found")
    _check_mask_folders(args)
    if args.gate is not None and not Path(args.gate).is_file():
        raise CliError(f"gate model {args.gate} does not exist")
    spec, model = load_model_args(args)
    config = VerdictConfig(
        min_images=args.min_images,
        faithfulness=not args.no_faithfulness,
        counterfactuals=not args.no_counterfactuals,
    )
    if args.no_finding_class:
        config = dataclasses.replace(config, no_finding_classes=tuple(args.no_finding_class))
    gate = ModelSpec(path=args.gate, trust=_trusts_other(args.gate, args)) if args.gate else None
    job = VerifyJob(
        spec, args.bundle, labels=labels, annotation_dir=args.annotations, anatomy_dir=args.anatomy,
        gate=gate, config=config,
    )  # fmt: skip
    try:
        job.setup(model)  # the main model is loaded: a file refused here is the gate
    except UntrustedFileError as exc:
        raise UntrustedFileError(f"{exc} The flag for the --gate file is --trust-other {args.gate}") from exc
    if model.task == "multilabel" and job.mismatch is None:  # one verdict per label
        report = _verify_labels(args, job, model, paths, labels)
    else:
        if labels is not None:
            unknown = sorted(set(labels) - set(job.bundle.class_names))
            if unknown:
                raise CliError(
                    f"labels {unknown} are not classes of the bundle {list(job.bundle.class_names)}"
                )
        rows: list[Row[ImageMeasurement]] = []
        if job.mismatch is None:
            for row in run_job(job, paths, engine_options(args), progress=progress_flag(args)):
                check_row(row, args)
                rows.append(row)
        report = merge_verify_rows(rows, job)
    doc = verify_document(args, report)
    if args.json_out:
        write_text_atomic(args.json_out, dumps(doc))
    if args.csv_out:
        write_text_atomic(args.csv_out, verify_table(report).to_csv(index=False))
    out = [report.text()]
    if report.errors:
        out.append(f"{len(report.errors)} unreadable image(s) left out of the verdict (see the table)")
    out.extend(f"warning: {w}" for w in report.warnings)
    sys.stdout.write("\n".join(out) + "\n")
    return VERDICT_EXIT[report.verdict]


def _verify_labels(
    args: argparse.Namespace,
    job: VerifyJob,
    model: LoadedModel,
    paths: Sequence[Path],
    labels: list[str] | None,
) -> VerificationReport:
    """A multi-label model: one verdict per label (:mod:`verification.verdict.multilabel`), local engine.
    With ``--labelled``, a label is a class subfolder's name, or in a CSV one name or several joined by "|"
    (``Effusion|Nodule``; an empty cell: none of the labels); finding masks stand for each of their image's
    labels."""
    from verification.verdict import verify

    if args.engine != "local":
        raise CliError(
            "a multi-label model is verified label by label on the local engine: use --engine local"
        )
    got, failed = job.masks_of(paths)  # an image whose mask file cannot be read is an error row
    kept = sorted(got)
    masks = [got[i] for i in kept]
    unread = [(str(paths[i]), message) for i, message in sorted(failed.items())]
    ann = [a for a, _ in masks] if args.annotations else None
    roi = [r for _, r in masks] if args.anatomy else None
    gate = job.gate_spec.load() if job.gate_spec is not None else None
    sets = None if labels is None else [[] if labels[i] == "" else labels[i] for i in kept]
    report = verify(
        model, job.bundle, [str(paths[i]) for i in kept], sets, annotations=ann, anatomy=roi, gate=gate,
        config=job.config, batch_size=args.batch_size,
    )  # fmt: skip
    return dataclasses.replace(report, errors=(*unread, *report.errors)) if unread else report


def verify_document(args: argparse.Namespace, report: VerificationReport) -> dict[str, Any]:
    """The verify result as written by ``--json``: the report's one document, examples trimmed to
    ``--examples``, with the run's paths and engine added to the provenance."""
    report = dataclasses.replace(report, examples=report.examples[: args.examples])
    doc: dict[str, Any] = report.to_document()
    doc["provenance"] = {
        **doc["provenance"],
        "run": {
            "model_path": str(args.model), "bundle_path": str(args.bundle), "inputs": list(args.inputs),
            "engine": args.engine, "batch_size": args.batch_size, "labelled": bool(args.labelled),
            "annotations": args.annotations, "anatomy": args.anatomy, "gate": args.gate,
        },
    }  # fmt: skip
    return doc


def verify_table(report: VerificationReport) -> pd.DataFrame:
    """One row per image (status ok / not assessable / error) with the line values."""
    import pandas as pd

    records = []
    for im in report.images:
        records.append(
            {
                "image": im.name, "status": "ok" if im.assessable else "not assessable", "label": im.label,
                "predicted": im.predicted, "probability": max(im.probabilities) if im.probabilities else None,
                **dict(im.values), "why": im.why,
            }
        )  # fmt: skip
    records += [{"image": name, "status": "error", "why": err} for name, err in report.errors]
    return pd.DataFrame.from_records(records).convert_dtypes()


def _directions(metrics: Sequence[str]) -> dict[str, bool]:
    from verification.metrics import METRICS

    return {m: bool(METRICS[m].higher_is_better) for m in metrics}
