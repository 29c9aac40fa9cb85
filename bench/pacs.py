"""Benchmark: ``verify`` (:func:`verification.verify`, the one verify path) on 200 images read from a PACS
against the same 200 images read from a folder; the throughput ratio PACS / folder is printed (target ≥ 0.8).

Run: ``.venv/bin/python -m bench.pacs [--images 200] [--repeats 1] [--threads 2]``

1. 200 DICOM instances are generated from the demo's test images (cycled; 8-bit MONOCHROME2 CR, one new study,
   a new series per 50 images, new SOP UIDs), written to a temporary folder AND stored in a local Orthanc
   (started here with DICOMweb, see :mod:`verification.pacs.orthanc`) through its REST API.
2. Folder: ``verification.batch.scan_images([folder])`` then ``verify(model, bundle, paths, labels)``.
   PACS: ``scan_images(["dicomweb+http://…/studies/<uid>"])`` (WADO-RS retrieval into a private temporary
   folder, bounded, then the same loader) then the same ``verify``. Both timed end to end (retrieval
   included), the demo's sound model against its reference bundle, default VerdictConfig, labels from the file
   names; a warm-up verify on 8 images runs first. With ``--repeats`` the two alternate (which goes first
   too, so neither gains from the other's warm caches) and medians are used; the retrieval time is printed.
3. The two reports must agree (verdict and per-image predictions): the images are the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file (python bench/x.py): make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from verification.io.records import LoadedModel
from verification.verdict import VerificationReport

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "assets/demo/models/sound.safetensors"
BUNDLE = ROOT / "assets/demo/references/sound_gradcam"
SERIES_SIZE = 50


def make_dicoms(folder: Path, n: int) -> tuple[list[Path], list[str], str]:
    """``n`` CR DICOMs from the demo test images (cycled), new UIDs; (paths, labels, StudyInstanceUID)."""
    from PIL import Image
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    sources = sorted((ROOT / "assets/demo/images/test").glob("*.png"))
    study = generate_uid()
    series = [generate_uid() for _ in range((n + SERIES_SIZE - 1) // SERIES_SIZE)]
    paths, labels = [], []
    for i in range(n):
        src = sources[i % len(sources)]
        pixels = np.asarray(Image.open(src).convert("L"), dtype=np.uint8)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{i:04d}_{src.stem}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series[i // SERIES_SIZE]
        ds.PatientName, ds.PatientID, ds.StudyDate = "Bench^Synthetic", "BENCH-0001", "20260101"
        ds.Modality, ds.BodyPartExamined, ds.SeriesNumber, ds.InstanceNumber = (
            "CR",
            "CHEST",
            1 + i // 50,
            i + 1,
        )
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pixels.tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        labels.append(src.stem.split("_", 1)[1])
    return paths, labels, study


def run(
    sources: list[str], labels_by_stem: dict[str, str], model: LoadedModel, bundle: Any
) -> tuple[float, float, VerificationReport]:
    """(seconds end to end, of which resolving the sources — the PACS retrieval —, the report)."""
    from verification import verify
    from verification.batch import scan_images

    start = time.perf_counter()
    paths = scan_images(sources)
    scanned = time.perf_counter() - start
    # The PACS copies are named by SOP UID: labels are looked up by stem for both.
    labels = [labels_by_stem[p.stem] for p in paths]
    report = verify(model, bundle, paths, labels)
    return time.perf_counter() - start, scanned, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import pydicom

    from verification import load_bundle, load_model, verify
    from verification.pacs.orthanc import OrthancServer

    model = load_model(MODEL)
    bundle = load_bundle(BUNDLE, model=model)
    with tempfile.TemporaryDirectory(prefix="bench-pacs-") as tmp, OrthancServer() as server:
        folder = Path(tmp) / "images"
        folder.mkdir()
        t0 = time.perf_counter()
        paths, labels, study = make_dicoms(folder, args.images)
        for p in paths:
            server.upload(p.read_bytes())
        print(f"seeded {len(paths)} instances ({sum(p.stat().st_size for p in paths) / 1e6:.1f} MB) in "
              f"{time.perf_counter() - t0:.1f} s; Orthanc at {server.dicomweb_url}")  # fmt: skip
        # labels by stem: the folder's file stems, and the PACS copies' stems (their SOP UIDs)
        by_stem = {p.stem: lab for p, lab in zip(paths, labels, strict=True)}
        for p, lab in zip(paths, labels, strict=True):
            by_stem[str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)] = lab
        os.environ["VERIFICATION_DICOMWEB_USER"] = server.user
        os.environ["VERIFICATION_DICOMWEB_PASSWORD"] = server.password
        url = f"dicomweb+{server.dicomweb_url}/studies/{study}"
        verify(model, bundle, paths[:8], labels[:8])  # warm-up: imports, first-call costs
        times: dict[str, list[float]] = {"folder": [], "pacs": []}
        fetch: list[float] = []
        reports = {}
        for r in range(args.repeats):
            order = ("folder", "pacs") if r % 2 == 0 else ("pacs", "folder")  # alternate: no order bias
            for kind in order:
                t, scanned, reports[kind] = run(
                    [str(folder)] if kind == "folder" else [url], by_stem, model, bundle
                )
                times[kind].append(t)
                if kind == "pacs":
                    fetch.append(scanned)
                print(
                    f"  run {r + 1} {kind}: {t:.1f} s"
                    + (f" (retrieval {scanned:.1f} s)" if kind == "pacs" else "")
                )
    t_folder, t_pacs = statistics.median(times["folder"]), statistics.median(times["pacs"])
    rf, rp = reports["folder"], reports["pacs"]

    def outputs(report: VerificationReport) -> list[tuple[float, ...]]:
        return sorted(tuple(round(float(q), 5) for q in im.probabilities) for im in report.images)

    same = rf.label == rp.label and outputs(rf) == outputs(rp)
    n = args.images
    print(
        f"median of {args.repeats}: folder {t_folder:.1f} s ({n / t_folder:.2f} images/s)   "
        f"PACS {t_pacs:.1f} s ({n / t_pacs:.2f} images/s, of which WADO-RS retrieval {statistics.median(fetch):.1f} s)"
    )
    print(f"verdict folder {rf.label} / PACS {rp.label}; same results: {same}")
    print(f"throughput ratio PACS / folder = {t_folder / t_pacs:.3f} (target ≥ 0.8); load: {os.getloadavg()}")
    if not same:
        raise SystemExit("the PACS and folder runs disagree: the images are not the same")


if __name__ == "__main__":
    main()
