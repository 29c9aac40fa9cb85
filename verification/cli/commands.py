"""The small commands: ``methods``, ``layers``, ``report`` and ``consistency``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from verification.cli.common import (
    EXIT_OK,
    CliError,
    check_row,
    class_indices,
    load_model_args,
    progress_flag,
    read_verify_result,
)
from verification.cli.outputs import atomic_file, dumps, write_text_atomic


def cmd_methods(args: argparse.Namespace) -> int:
    """Every registered method: name, kind, label, options, reference (the registry's listing)."""
    from verification.cam.methods import METHODS, option_names

    rows = [
        {
            "name": spec.name,
            "kind": spec.kind,
            "label": spec.label,
            "options": sorted(option_names(spec.name)),
            "reference": spec.reference,
        }
        for spec in METHODS.values()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    kind_width = max(len(r["kind"]) for r in rows)
    for r in rows:
        print(f"{r['name']:<{width}}  {r['kind']:<{kind_width}}  {r['label']} ({r['reference']})")
    return EXIT_OK


def cmd_layers(args: argparse.Namespace) -> int:
    from verification.cam.layers import default_target_layer, list_layers

    _, model = load_model_args(args)
    shape = (1, model.in_channels, *model.input_size)
    layers = list_layers(model.module, shape)
    default = default_target_layer(model.module, shape)
    rows = [
        {"name": info.name, "type": info.type, "output_shape": list(info.output_shape or ())}
        for info in layers
        if args.all or info.spatial
    ]
    if args.json:
        sys.stdout.write(
            dumps({"model": args.model, "input_shape": list(shape), "default": default, "layers": rows})
        )
        return EXIT_OK
    width = max([len(r["name"]) for r in rows] + [5])
    type_width = max([len(r["type"]) for r in rows] + [4])
    lines = [f"  {'layer':<{width}}  {'type':<{type_width}}  output"]
    for r in rows:
        mark = "*" if r["name"] == default else " "
        shape_text = "×".join(str(s) for s in r["output_shape"])
        lines.append(f"{mark} {r['name']:<{width}}  {r['type']:<{type_width}}  {shape_text}")
    lines.append(f"default target layer (*): {default}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from verification.report import render_report

    source = Path(args.result)
    if not source.is_file():
        raise CliError(f"verify result {source} does not exist")
    report = read_verify_result(source, "verify result")
    html_out, pdf_out = args.out, args.pdf_out
    if html_out is not None and str(html_out).lower().endswith(".pdf"):
        html_out, pdf_out = None, pdf_out or html_out
    if html_out is None and pdf_out is None:
        raise CliError("say where to write the report: -o report.html and/or --pdf report.pdf")
    for target in (html_out, pdf_out):
        if target is None:
            continue
        if target == pdf_out:
            from verification.report import render_pdf

            with atomic_file(target) as tmp:
                tmp.write_bytes(render_pdf(report, title=args.title))
        else:
            write_text_atomic(target, render_report(report, title=args.title))
        if not args.quiet:
            sys.stderr.write(f"report → {target}\n")
    return EXIT_OK


def cmd_consistency(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from verification.batch import read_images, scan_labelled
    from verification.consistency import track_checkpoints
    from verification.engines import progress_disabled
    from verification.io.models import load_model

    missing = [c for c in args.checkpoints if not Path(c).is_file()]
    if missing:
        raise CliError(f"checkpoint file(s) not found: {', '.join(missing)}")
    paths, labels = scan_labelled(args.data)
    first = load_model(args.checkpoints[0], trust=args.trust)
    y = class_indices(labels, first.class_names, args.data)
    # as in cam and verify: an unreadable file is left out and named (--strict: the first one fails the run)
    images, kept, errors = read_images(paths)
    for row in errors:
        check_row(row, args)
    if not images:
        raise CliError(f"none of the {len(paths)} images could be read; first error: {errors[0].error}")
    with tqdm(
        total=len(args.checkpoints), unit="ckpt", disable=progress_disabled(progress_flag(args)), leave=False
    ) as bar:
        series = track_checkpoints(
            [first, *args.checkpoints[1:]],
            images,
            [y[i] for i in kept],
            methods=args.methods,
            layer=args.layer,
            names=[Path(c).stem for c in args.checkpoints],
            tau=args.tau,
            gamma=args.gamma,
            max_pairs=args.max_pairs,
            seed=args.seed,
            drop=args.drop,
            batch_size=args.batch_size,
            trust=args.trust,
            progress=lambda done, total, name: bar.update(1),
        )
    if args.json_out:
        write_text_atomic(args.json_out, series.to_json() + "\n")
    if args.csv_out:
        write_text_atomic(args.csv_out, series.to_frame().to_csv(index=False))
    sys.stdout.write(series.table().to_string(index=False, float_format=lambda v: f"{v:.3f}") + "\n")
    for warning in series.warnings:  # a dip that came back is said as such: it is not drift
        kind = "note (recovered dip)" if warning.recovered else "warning"
        sys.stdout.write(f"{kind}: {warning.message()}\n")
    if errors:
        sys.stdout.write(
            f"warning: {len(errors)} unreadable image(s) left out: "
            + "; ".join(f"{Path(e.path).name}: {e.error}" for e in errors[:3])
            + ("; …" if len(errors) > 3 else "")
            + "\n"
        )
    return EXIT_OK
