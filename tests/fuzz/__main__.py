"""Run hostile inputs through the backend and print issue #14's table.

``python -m tests.fuzz`` builds the corpus in a temporary folder and runs all of it.
``python -m tests.fuzz PATH [PATH ...]`` runs your own files (inputs not in the repo). Each file goes,
by its kind, through: images and anything unknown → ``load_image`` and the dashboard's upload path; ``.zip``
→ the upload path; ``.pt/.pth/.pt2/.safetensors/.bin/.ckpt`` → ``load_model`` and the dashboard's model
upload (``<stem>.json`` beside it is the sidecar); a ``.json`` with no model beside it → the demo weights with
it as sidecar; an ``.npz`` with its ``.json`` → ``load_bundle``; and each folder holding images →
``python -m verification cam``. A file may load or fail with a typed error; crashes, hangs, blow-ups and
payload traces are reported. Exit status 1 if any input failed.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.fuzz import corpus, runner

MODEL_SUFFIXES = {".pt", ".pth", ".pt2", ".safetensors", ".bin", ".ckpt"}


def _own_files(paths: list[Path], work: Path) -> list[dict[str, Any]]:
    files = sorted(
        p for path in paths for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()
    )
    specs: list[dict[str, Any]] = []

    def add(
        category: str, op: str, args: dict[str, Any], timeout: float = 120.0, id: str | None = None
    ) -> None:
        specs.append(
            {
                "id": id or f"{op}:{args.get('path') or args.get('files', [''])[0]}",
                "category": category,
                "op": op,
                "expect": "either",
                "timeout_s": timeout,
                "args": args,
            }
        )

    image_dirs: set[Path] = set()
    for f in files:
        suffix = f.suffix.lower()
        sidecar = f.with_suffix(".json")
        if suffix in MODEL_SUFFIXES:
            args = {"path": str(f), **({"sidecar": str(sidecar)} if sidecar.is_file() else {})}
            add("model", "load_model", args)
            add("model", "upload_model", args)
        elif suffix == ".npz" and sidecar.is_file():
            add("bundle", "load_bundle", {"path": str(f.with_suffix(""))})
        elif suffix == ".json":
            if any(f.with_suffix(s).is_file() for s in (*MODEL_SUFFIXES, ".npz")):
                continue
            add("sidecar", "load_model", {"path": str(corpus.SOUND), "sidecar": str(f)})
        elif suffix == ".zip":
            add("zip", "upload", {"files": [str(f)]})
        else:
            add("image", "load_image", {"path": str(f)})
            add("upload", "upload", {"files": [str(f)]})
            image_dirs.add(f.parent)
    for k, folder in enumerate(sorted(image_dirs)):
        out = work / "work" / f"cam{k}"
        out.mkdir(parents=True, exist_ok=True)
        argv = ["cam", str(corpus.SOUND), str(folder), "-o", str(out / "out"), "-q", "--no-overlays"]
        add(
            "cli", "cli", {"argv": argv, "cwd": str(out), "out": str(out / "out")}, 600.0, f"cli cam {folder}"
        )
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "paths", nargs="*", type=Path, help="your hostile files/folders (default: the corpus)"
    )
    parser.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work = (args.work or Path(tmp)).resolve()
        root = work / "corpus"
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if args.paths:
            specs = _own_files([p.resolve() for p in args.paths], root)
            expect = {s["id"]: s["expect"] for s in specs}
        else:
            specs = corpus.run_specs(root)
            expect = {i.id: i.expect for i in corpus.ITEMS}
        build_s = time.monotonic() - t0
        raws = runner.run_corpus(specs, root, total_timeout=3600.0)
        every = [runner.verdict(r, expect.get(r.get("parent") or r["id"], "either")) for r in raws]
        per_item = {v.id: v for v in every}
        timing = {"build_s": build_s, "run_s": time.monotonic() - t0 - build_s}
        print(runner.summary(per_item, every, timing))
        (work / "fuzz-results.json").write_text(json.dumps(raws, indent=1, default=str))
        return 1 if any(v.outcome not in runner.OK for v in every) else 0


if __name__ == "__main__":
    sys.exit(main())
