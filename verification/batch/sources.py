"""Image sources: files and folders (recursively), DICOMweb addresses, and labelled sources (one folder per
class, or a CSV of ``path,label``) expanded into lists of image paths."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "scan_images", "scan_labelled"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom"})


def scan_images(sources: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders are searched recursively for files with an image suffix (``IMAGE_SUFFIXES``, case-insensitive);
    files named explicitly are kept whatever their suffix (DICOM files often have none). A DICOMweb address
    (``dicomweb+http(s)://host:port/root/studies/<uid>[/series/<uid>]``) is retrieved from the PACS into a
    private temporary folder (:func:`verification.pacs.materialize`: bounded, typed ``PacsError``s). Raises
    ``FileNotFoundError`` for a source that does not exist.
    """
    found: list[Path] = []
    for source in sources:
        if isinstance(source, str) and source.lower().startswith("dicomweb+"):
            from verification.pacs.sources import materialize

            found.extend(materialize(source))
            continue
        path = Path(source)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not _hidden(p, path)
                )
            )
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    seen: set[Path] = set()
    unique = []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def scan_labelled(source: str | Path) -> tuple[list[Path], list[str]]:
    """Images and their class names from a labelled source.

    ``source`` is a folder with one subfolder per class (its name is the label; images anywhere below it), or
    a CSV file of ``path,label`` rows (an optional ``path,label`` header; relative paths are taken from the
    CSV's folder). Raises FileNotFoundError for a missing source or listed file, ValueError for a malformed
    CSV or a folder without class subfolders.
    """
    if isinstance(source, str) and source.lower().startswith("dicomweb+"):
        raise ValueError(
            "a DICOMweb source carries no class labels: give it without --labelled, or save its images into "
            "one folder per class"
        )
    source = Path(source)
    if source.is_dir():
        classes = sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith("."))
        paths: list[Path] = []
        labels: list[str] = []
        for folder in classes:
            found = scan_images([folder])
            paths.extend(found)
            labels.extend([folder.name] * len(found))
        if not paths:
            raise ValueError(
                f"{source} has no class subfolders with images; expected <class>/<image> (e.g. "
                f"{source}/normal/001.png) or a CSV of path,label"
            )
        return paths, labels
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file or folder")
    import csv

    paths, labels = [], []
    with source.open(newline="", encoding="utf-8-sig") as fh:
        for line, record in enumerate(csv.reader(fh), start=1):
            if not record or all(not cell.strip() for cell in record):
                continue
            if len(record) < 2:
                raise ValueError(f"{source}:{line}: expected 'path,label', got {','.join(record)!r}")
            path_text, label = record[0].strip(), record[1].strip()
            if line == 1 and (path_text.lower(), label.lower()) == ("path", "label"):
                continue
            path = Path(path_text)
            path = path if path.is_absolute() else source.parent / path
            if not path.is_file():
                raise FileNotFoundError(f"{source}:{line}: image {path} does not exist")
            paths.append(path)
            labels.append(label)
    if not paths:
        raise ValueError(f"{source} lists no images; expected rows of path,label")
    return paths, labels


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
