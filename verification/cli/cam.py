"""The ``cam`` command: maps for image files and folders (or a DICOMweb study), .npz + overlays + manifest."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verification.cli.common import (
    EXIT_OK,
    CliError,
    check_row,
    engine_options,
    load_model_args,
    progress_flag,
    read_verify_result,
)
from verification.cli.outputs import atomic_dir, check_output_dir, dumps

if TYPE_CHECKING:
    from verification.batch import ImageCams, Row
    from verification.io.records import LoadedModel
    from verification.pacs.sources import CamRecord


def _output_stems(paths: Sequence[Path], inputs: Sequence[str]) -> list[str]:
    """Relative output names mirroring each image's place under the input folder it came from; unique."""
    roots = [Path(i).resolve() for i in inputs if Path(i).is_dir()]
    stems: list[str] = []
    used: set[str] = set()
    for path in paths:
        resolved = path.resolve()
        rel: Path | None = None
        for root in roots:
            if resolved.is_relative_to(root):
                rel = resolved.relative_to(root)
                break
        stem = (rel.with_suffix("") if rel is not None else Path(path.stem)).as_posix()
        candidate, n = stem, 1
        while candidate in used:
            n += 1
            candidate = f"{stem}-{n}"
        used.add(candidate)
        stems.append(candidate)
    return stems


def cmd_cam(args: argparse.Namespace) -> int:
    from verification.batch import CamJob, scan_images
    from verification.engines import run_job

    check_output_dir(Path(args.out), force=args.force)  # before the slow part
    verdict = _pacs_verdict(args)
    paths = scan_images(args.inputs)
    spec, model = load_model_args(args)
    if not paths:
        raise CliError(f"no images found in {', '.join(args.inputs)}")
    stems = _output_stems(paths, args.inputs)
    job = CamJob(
        spec, methods=args.methods, layers=args.layer, target=args.target, keep_display=not args.no_overlays
    )
    job.setup(model)
    options = engine_options(args)
    entries: list[dict[str, Any]] = []
    keys: list[str] = []
    to_store: list[CamRecord] = []
    with atomic_dir(args.out, force=args.force) as staging:
        for row in run_job(job, paths, options, progress=progress_flag(args)):
            stem = stems[row.index]
            entry: dict[str, Any] = {"path": row.path, "error": row.error}
            check_row(row, args)
            if row.result is not None and not row.error:
                keys = list(row.result.maps)
                entry.update(_write_cam_row(staging, stem, row, model, overlays=not args.no_overlays))
                if args.pacs_store:
                    to_store.append(_pacs_record(row.path, row.result, model))
            entries.append(entry)
        failed = sum(1 for e in entries if e["error"])
        if failed == len(entries):
            raise CliError(
                f"none of the {len(entries)} images could be processed; first error: {entries[0]['error']}"
            )
        manifest = {
            "schema": "verification.cli.cam",
            "schema_version": 1,
            "model": {"path": args.model, "name": model.name, "class_names": list(model.class_names)},
            "methods": list(args.methods),
            "results": keys,
            "target": args.target,
            "engine": options.engine,
            "batch_size": options.batch_size,
            "images": entries,
            "n_images": len(entries),
            "n_errors": failed,
            "overlays": not args.no_overlays,
        }
        # Written last: a folder with manifest.json is complete.
        (staging / "manifest.json").write_text(dumps(manifest), encoding="utf-8")
    if not args.quiet:
        sys.stderr.write(
            f"cam: {len(entries) - failed} images → {args.out}"
            + (f", {failed} unreadable" if failed else "")
            + "\n"
        )
    if to_store:
        from verification.pacs.sources import store_cam_records

        stored = store_cam_records(to_store, model=model.name, verdict=verdict)
        if not args.quiet:
            sys.stderr.write(f"cam: {stored} heatmap object(s) stored in the PACS, in a new series\n")
    return EXIT_OK


def _pacs_verdict(args: argparse.Namespace) -> str:
    """The verdict to record in heatmaps stored back (``--pacs-verdict``), checked before the slow part."""
    from verification.pacs import is_dicomweb

    if args.pacs_store and args.no_overlays:
        raise CliError("--pacs-store stores the overlays: drop --no-overlays")
    if args.pacs_store and not any(is_dicomweb(i) for i in args.inputs):
        raise CliError("--pacs-store needs inputs from a PACS (dicomweb+http://host:port/…/studies/<uid>)")
    if args.pacs_verdict is None:
        return "not verified"
    if not args.pacs_store:
        raise CliError("--pacs-verdict is recorded only with --pacs-store")
    report = read_verify_result(args.pacs_verdict, "--pacs-verdict file")
    line = f" ({report.deciding_line})" if report.deciding_line else ""
    return f"{report.label}{line}"


def _pacs_record(path: str, cams: ImageCams, model: LoadedModel) -> CamRecord:
    from verification.pacs import origin
    from verification.pacs.sources import CamRecord

    if origin(path) is None:
        raise CliError(f"{path} was not read from a PACS; --pacs-store takes only dicomweb+ inputs")
    if cams.display is None:
        raise CliError(f"{path}: no picture kept to draw the overlay on")
    return CamRecord(path, cams.display, dict(cams.maps), model.class_name(cams.target))


def _write_cam_row(
    staging: Path, stem: str, row: Row[ImageCams], model: LoadedModel, *, overlays: bool
) -> dict[str, Any]:
    from verification.batch import save_image_cams
    from verification.report import overlay_png

    npz = staging / f"{stem}.npz"
    npz.parent.mkdir(parents=True, exist_ok=True)
    save_image_cams(npz, row, class_names=model.class_names)
    cams = row.result
    assert cams is not None  # the caller writes only rows with maps
    written: dict[str, str] = {}
    if overlays and cams.display is not None:
        layers = {key.split("@", 1)[1] for key in cams.maps}
        for key, cam in cams.maps.items():
            method, layer = key.split("@", 1)
            name = f"{stem}.{method}.png" if len(layers) == 1 else f"{stem}.{method}@{layer}.png"
            (staging / name).write_bytes(overlay_png(cams.display, cam))
            written[key] = name
    pred = cams.pred
    return {
        "npz": npz.relative_to(staging).as_posix(),
        "overlays": written,
        "pred": pred,
        "pred_class": model.class_name(pred),
        "prob": float(cams.probs[pred]),
        "target": cams.target,
        "constant": {k: bool(v) for k, v in cams.constant.items()},
    }
