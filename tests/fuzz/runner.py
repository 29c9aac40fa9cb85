"""Run corpus items in memory-capped child processes and say, for each, what happened.

``python -m tests.fuzz.runner SPECS.json RESULTS.jsonl`` is a *zygote*: it imports the backend once (torch,
pydicom, PIL, the CLI, ...) without computing anything, then forks one child per input. Each child caps its
address space (``RLIMIT_AS`` = the zygote's mapped size + :data:`CAP_BYTES`), resets its peak-RSS counter,
runs the input through one public entry point and reports through a pipe; the zygote enforces the time limit
(SIGKILL), takes the child's ``ru_maxrss`` from ``wait4``, checks that no payload marker appeared and that
nothing changed in the corpus tree outside the input's output folder, and writes one JSON line per input.
A fork per input costs a few milliseconds, so even pydicom's 261 test files each get their own process.

:func:`verdict` turns a raw result into one of the outcomes of issue #14: ``loaded``, ``typed error``,
``untyped crash``, ``hang``, ``blow-up`` or ``silently wrong``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CAP_BYTES = 3 << 30  # address space a child may map on top of what the imports already mapped
MEMORY_BOUND_MB = 1536.0  # resident growth above the child's start that counts as a blow-up
# An upload may keep up to 2 GiB of decoded images (verification.io.budget.ResourceLimits.max_decoded_bytes).
UPLOAD_BOUND_MB = 2560.0
MAX_MESSAGE = 2000  # an error message longer than this is itself a blow-up (issue #14: 11 MB messages)
OK = ("loaded", "typed error")
OUTCOMES = ("loaded", "typed error", "silently wrong", "untyped crash", "hang", "blow-up")


# ============================================================================================== the verdict


@dataclass(frozen=True)
class Verdict:
    id: str
    category: str
    outcome: str
    detail: str
    seconds: float
    peak_mb: float  # ru_maxrss of the child
    growth_mb: float  # VmHWM − VmRSS at the start of the item, in the child


def memory_bound(category: str) -> float:
    """Resident growth (MB) above which an input of ``category`` counts as a blow-up."""
    return UPLOAD_BOUND_MB if category == "zip" else MEMORY_BOUND_MB


def verdict(raw: dict[str, Any], expect: str) -> Verdict:
    """Classify one raw result against what the item expects."""
    status = raw.get("status", "")
    detail = raw.get("detail", "")
    growth = float(raw.get("growth_mb", 0.0))
    outcome: str
    if status == "timeout":
        outcome, detail = "hang", f"killed after {raw.get('seconds', 0):.0f} s"
    elif raw.get("marker_exists"):
        outcome, detail = "silently wrong", f"payload ran: {raw['marker_exists']} exists"
    elif raw.get("written_outside"):
        outcome, detail = "silently wrong", f"wrote outside the output folder: {raw['written_outside'][:3]}"
    elif status != "reported":
        outcome = "blow-up" if status in ("signal 9",) else "untyped crash"
        detail = f"child died ({status}) {detail}".strip()
    elif raw.get("kind") == "memory":
        outcome = "blow-up"
    elif growth > memory_bound(raw.get("category", "")):
        bound = memory_bound(raw.get("category", ""))
        outcome, detail = "blow-up", f"resident memory grew {growth:.0f} MB (> {bound:.0f}); {detail}"
    elif raw.get("kind") == "typed":
        if len(raw.get("message", "")) > MAX_MESSAGE:
            outcome, detail = "blow-up", f"error message of {raw['message_len']:,} characters"
        elif raw.get("bad_message"):
            outcome, detail = "silently wrong", raw["bad_message"]
        elif expect in ("load", "rows", "verify_rows"):
            outcome = "silently wrong"
            detail = f"refused a valid input: {raw.get('error_type')}: {raw.get('message', '')[:200]}"
        else:
            outcome, detail = "typed error", f"{raw.get('error_type')}: {raw.get('message', '')[:160]}"
    elif raw.get("kind") == "crash":
        outcome = "untyped crash"
    elif raw.get("kind") == "loaded":
        if raw.get("wrong"):
            outcome, detail = "silently wrong", raw["wrong"]
        elif expect == "error":
            outcome, detail = "silently wrong", f"accepted: {raw.get('summary', '')}"
        else:
            outcome, detail = "loaded", str(raw.get("summary", ""))
    else:
        outcome = "untyped crash"
    return Verdict(
        id=raw["id"],
        category=raw.get("category", ""),
        outcome=outcome,
        detail=detail[:400],
        seconds=float(raw.get("seconds", 0.0)),
        peak_mb=float(raw.get("peak_mb", 0.0)),
        growth_mb=growth,
    )


def summary(per_item: dict[str, Verdict], every: list[Verdict], timing: dict[str, float]) -> str:
    """The closing table of issue #14: inputs tried per category and what became of them, worst memory."""
    rows: dict[str, Counter[str]] = defaultdict(Counter)
    worst: dict[str, Verdict] = {}
    slowest: dict[str, Verdict] = {}
    for v in every:
        cat = v.category
        rows[cat][v.outcome] += 1
        if cat not in worst or v.growth_mb > worst[cat].growth_mb:
            worst[cat] = v
        if cat not in slowest or v.seconds > slowest[cat].seconds:
            slowest[cat] = v
    head = ["category", "inputs", *OUTCOMES, "worst growth MB (bound)", "worst input", "slowest s"]
    lines = [head]
    for cat in sorted(rows):
        c = rows[cat]
        bound = memory_bound(cat)
        lines.append(
            [
                cat,
                str(sum(c.values())),
                *(str(c[o]) for o in OUTCOMES),
                f"{worst[cat].growth_mb:.0f} ({bound:.0f})",
                worst[cat].id[:38],
                f"{slowest[cat].seconds:.1f}",
            ]
        )
    total = Counter(v.outcome for v in every)
    lines.append(["all", str(len(every)), *(str(total[o]) for o in OUTCOMES), "", "", ""])
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    text = "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) for r in lines)
    failures = [v for v in per_item.values() if v.outcome not in OK]
    text += f"\n\ncorpus built in {timing['build_s']:.0f} s, run in {timing['run_s']:.0f} s"
    text += f" (address-space cap +{CAP_BYTES >> 30} GiB per child)\n"
    if failures:
        text += "\nfailing inputs:\n" + "\n".join(
            f"  {v.id}: {v.outcome} — {v.detail[:200]}" for v in failures
        )
    return text + "\n"


# ============================================================================================== parent side


def run_corpus(
    specs: list[dict[str, Any]], root: Path, *, total_timeout: float = 900.0, parallel: int = 1
) -> list[dict[str, Any]]:
    """Run ``specs`` (each: id, category, op, expect, timeout_s, args) through a zygote; raw results."""
    spec_file = root / "_specs.json"
    out_file = root / "_results.jsonl"
    spec_file.write_text(json.dumps({"root": str(root), "items": specs, "parallel": parallel}))
    out_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    log = root / "_zygote.log"
    with open(log, "wb") as fh:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.fuzz.runner", str(spec_file), str(out_file)],
            cwd=ROOT,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=total_timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"fuzz zygote exited {proc.returncode}: {log.read_text()[-3000:]}")
    return [json.loads(line) for line in out_file.read_text().splitlines() if line.strip()]


def once_per_run(tmp_path_factory: Any, key: str, compute: Callable[[Path], Any]) -> tuple[Any, Path]:
    """``compute(folder)`` once per test run, also under pytest-xdist: the first worker computes it (JSON) in
    the run's shared temporary folder, the others wait on a file lock and read it."""
    import fcntl

    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if not run_id:
        base = Path(tmp_path_factory.mktemp(key))
        return compute(base), base
    base = Path(tmp_path_factory.getbasetemp()).parent / f"{key}-{run_id}"
    base.mkdir(exist_ok=True)
    with open(base / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = base / "result.json"
        if not done.exists():
            done.write_text(json.dumps(compute(base)))
        return json.loads(done.read_text()), base


# ============================================================================================== zygote


def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmSize", "VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    return out


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    snap: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                st = os.lstat(p)
                snap[p] = (st.st_size, st.st_mtime_ns if name in filenames else 0)
    return snap


def _changed(
    before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]], allowed: list[str]
) -> list[str]:
    diff = [p for p in after if before.get(p) != after[p]] + [p for p in before if p not in after]
    return sorted(p for p in diff if not any(p == a or p.startswith(a + os.sep) for a in allowed))


def _preload() -> None:
    """Import everything the children use, so a fork starts warm. Nothing here computes (no OpenMP pool is
    started, so forked children may use threads safely)."""
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401
    import pydicom  # noqa: F401
    import safetensors.torch  # noqa: F401
    import tifffile  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401

    import verification.batch
    import verification.cam
    import verification.cli
    import verification.engines
    import verification.io
    import verification.metrics

    with contextlib.suppress(Exception):
        import verification.uploads  # noqa: F401
    with contextlib.suppress(Exception):
        import ui.loaders  # noqa: F401
    with contextlib.suppress(Exception):
        import cv2  # noqa: F401
    with contextlib.suppress(Exception):
        import timm  # noqa: F401


def zygote(spec_file: Path, out_file: Path) -> None:
    doc = json.loads(spec_file.read_text())
    root = Path(doc["root"])
    _preload()
    base = _status()
    cap = base["VmSize"] + CAP_BYTES
    with open(out_file, "a") as out:
        for spec in doc["items"]:
            subs = _expand({**spec, "root": str(root)})
            raws = (
                _run_batch(subs, root, cap) if spec["op"] == "load_images" else [_run_one(subs[0], root, cap)]
            )
            for raw in raws:
                out.write(json.dumps(raw, default=str) + "\n")
            out.flush()


def _expand(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """``load_images`` (a list of files) becomes one ``load_image`` run per file, ids ``<id>/<file name>``."""
    if spec["op"] != "load_images":
        return [spec]
    subs = []
    for path in spec["args"]["paths"]:
        subs.append(
            {
                **spec,
                "id": f"{spec['id']}/{Path(path).name}",
                "op": "load_image",
                "args": {"path": path},
                "timeout_s": 30.0,
                "parent": spec["id"],
            }
        )
    return subs


def _drain(read_fd: int) -> bytes:
    """What the child has written to the (non-blocking) pipe so far."""
    out = b""
    with contextlib.suppress(BlockingIOError):
        while chunk := os.read(read_fd, 1 << 16):
            out += chunk
    return out


def _poll(pid: int, deadline: float) -> tuple[bool, str, Any]:
    """One look at the child: ``(ended, status, rusage)``; status ``"signal N"`` when a signal ended it,
    ``"timeout"`` when it ran past ``deadline`` (it is then killed and reaped)."""
    done_pid, wstatus, rusage = os.wait4(pid, os.WNOHANG)
    if done_pid == pid:
        return True, f"signal {os.WTERMSIG(wstatus)}" if os.WIFSIGNALED(wstatus) else "", rusage
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        _, _, rusage = os.wait4(pid, 0)
        return True, "timeout", rusage
    return False, "", rusage


def _row(spec: dict[str, Any], status: str, peak_mb: float, rest: dict[str, Any]) -> dict[str, Any]:
    """A raw result: the spec's id, category, op and expectation, how the child ended, its peak RSS, then
    ``rest`` (the child's report, which wins over the keys before it)."""
    raw = {
        "id": spec["id"],
        "category": spec["category"],
        "op": spec["op"],
        "expect": spec["expect"],
        "status": status,
        "peak_mb": peak_mb,
        **rest,
    }
    if "parent" in spec:
        raw["parent"] = spec["parent"]
    return raw


def _run_batch(specs: list[dict[str, Any]], root: Path, cap: int) -> list[dict[str, Any]]:
    """Many read-only inputs (pydicom's files) in one child, one after another, each reported as it ends; if
    the child dies or hangs, the input it was on gets that outcome and a new child takes the rest."""
    results: list[dict[str, Any]] = []
    pending = list(specs)
    while pending:
        before = _snapshot(root)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            try:
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
                for spec in pending:
                    t = time.monotonic()
                    report = _child(spec, root)
                    report["seconds"] = round(time.monotonic() - t, 3)
                    os.write(
                        write_fd, (json.dumps({"id": spec["id"], **report}, default=str) + "\n").encode()
                    )
            finally:
                os._exit(0)
        os.close(write_fd)
        buffer = b""
        done: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + float(pending[0].get("timeout_s", 30.0))
        status, rusage = "", None
        os.set_blocking(read_fd, False)
        while True:
            ended, status, rusage = _poll(pid, deadline)
            # read after the look, so that the lines a child wrote just before it ended are not lost
            buffer += _drain(read_fd)
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                rep = json.loads(line)
                done[rep["id"]] = rep
                deadline = time.monotonic() + float(pending[0].get("timeout_s", 30.0))
            if ended:
                break
            time.sleep(0.005)
        os.close(read_fd)
        peak = round(rusage.ru_maxrss / 1024.0, 1) if rusage is not None else 0.0
        changed = _changed(before, _snapshot(root), [])
        unfinished = [spec for spec in pending if spec["id"] not in done]
        for spec in pending:
            if spec["id"] in done:
                raw = _row(spec, "reported", peak, done[spec["id"]])
                if changed:
                    raw["written_outside"] = changed
                results.append(raw)
        if unfinished:  # the child died or hung on this input; a new child takes the rest
            culprit, *unfinished = unfinished
            results.append(_row(culprit, status or "no report", peak, {"seconds": 0.0}))
        pending = unfinished
    return results


def _run_one(spec: dict[str, Any], root: Path, cap: int) -> dict[str, Any]:
    args = spec["args"]
    allowed = [a for a in (args.get("out"),) if a]
    markers = [m for m in (args.get("marker"),) if m]
    before = _snapshot(root)
    read_fd, write_fd = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # ------------------------------------------------------------------ child
        os.close(read_fd)
        code = 0
        report: dict[str, Any]
        try:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
            report = _child(spec, root)
        except BaseException as exc:
            report = {"kind": "crash", "detail": f"runner: {type(exc).__name__}: {exc}"}
            code = 1
        try:
            os.write(write_fd, json.dumps(report, default=str).encode())
        finally:
            os._exit(code)
    os.close(write_fd)  # ------------------------------------------------------------ zygote
    deadline = t0 + float(spec.get("timeout_s", 60.0))
    written = b""
    os.set_blocking(read_fd, False)
    while True:
        written += _drain(read_fd)
        ended, status, rusage = _poll(pid, deadline)
        if ended:
            break
        time.sleep(0.005)
    seconds = time.monotonic() - t0
    written += _drain(read_fd)
    os.close(read_fd)
    report = {}
    if written and status != "timeout":
        with contextlib.suppress(json.JSONDecodeError):
            report = json.loads(written)
    if report and not status:
        status = "reported"
    elif not status:
        status = "no report"
    after = _snapshot(root)
    peak = round((rusage.ru_maxrss / 1024.0) if rusage is not None else 0.0, 1)
    raw = _row(spec, status, peak, {"seconds": round(seconds, 3), **report})
    exists = [m for m in markers if os.path.lexists(m)]
    exists += [m for m in args.get("must_not_exist", []) if os.path.lexists(m)]
    if exists:
        raw["marker_exists"] = exists
    changed = _changed(before, after, allowed)
    if changed:
        raw["written_outside"] = changed
    return raw


# ============================================================================================== child


def _clear_peak() -> int:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM to the current RSS (Linux ≥ 4.0)
    return _status()["VmRSS"]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[-120:]


def _logs(root: Path) -> Path:
    """Where children keep their stdout/stderr: beside the corpus root, outside the watched tree."""
    logs = root.parent / f"{root.name}-logs"
    logs.mkdir(exist_ok=True)
    return logs


def _typed(error_type: str, message: str, banned: str | None) -> dict[str, Any]:
    """The report of a typed error: its type and message (cut past the bound, with its full length); a message
    holding the ``banned`` text is marked."""
    report: dict[str, Any] = {
        "kind": "typed",
        "error_type": error_type,
        "message": message[: MAX_MESSAGE + 1],
        "message_len": len(message),
    }
    if banned and banned in message:
        report["bad_message"] = f"message says {banned!r}: {message[:200]}"
    return report


def _child(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    from verification.errors import VerificationError

    args = spec["args"]
    os.chdir(args.get("cwd") or (root / "work"))
    log = open(_logs(root) / f"{_safe(spec['id'])}.log", "wb")  # noqa: SIM115
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    start = _clear_peak()
    t0 = time.monotonic()
    report: dict[str, Any]
    try:
        result = OPS[spec["op"]](args, spec)
        report = {"kind": "loaded", **result}
        if "typed_error" in result:  # CLI exit 1 with one 'error:' line / every upload refused with one
            report = _typed("exit 1", result["typed_error"], args.get("not_in_message"))
    except VerificationError as exc:
        report = _typed(type(exc).__name__, str(exc), args.get("not_in_message"))
    except MemoryError as exc:
        report = {"kind": "memory", "detail": f"MemoryError: {str(exc)[:200]}"}
    except RecursionError as exc:
        report = {"kind": "crash", "detail": f"RecursionError: {str(exc)[:200]}"}
    except Exception as exc:
        text = f"{type(exc).__name__}: {str(exc)[:300]}"
        memory = "allocate" in str(exc) or "out of memory" in str(exc).lower()
        report = {"kind": "memory" if memory else "crash", "detail": text, "where": _where(exc)}
    report["inner_seconds"] = round(time.monotonic() - t0, 3)
    report["growth_mb"] = round((_status()["VmHWM"] - start) / 2**20, 1)
    if spec["op"] == "cli_proc":  # the work ran in a grandchild: its peak over the zygote's resident size
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        report["growth_mb"] = round(max(0, peak - start) / 2**20, 1)
    sys.stdout.flush()
    sys.stderr.flush()
    return report


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/verification/" in f.filename or "/ui/" in f.filename]
    f = (ours or frames)[-1] if (ours or frames) else None
    return f"{Path(f.filename).name}:{f.lineno} in {f.name}" if f else ""


# ---------------------------------------------------------------------------------------------- checks


def _check_image(img: Any) -> str | None:
    import numpy as np

    px = img.pixels
    if px.dtype != np.float32:
        return f"pixels are {px.dtype}, not float32"
    if px.ndim not in (2, 3) or (px.ndim == 3 and px.shape[-1] != 3):
        return f"pixel shape {px.shape}"
    if not np.isfinite(px).all():
        return "non-finite pixels"
    if px.size and (px.min() < 0 or px.max() > 1):
        return f"pixels outside [0, 1]: [{px.min()}, {px.max()}]"
    if img.display.shape[:2] != px.shape[:2] or img.display.dtype != np.uint8:
        return "display does not match pixels"
    return None


def op_load_image(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    from verification.io import load_image

    img = load_image(args["path"])
    return {"wrong": _check_image(img), "summary": f"{img.source_format} {tuple(img.pixels.shape)}"}


def op_upload(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's upload path: the files as the browser sends them → expand zips → decode each blob."""
    from verification.errors import VerificationError
    from verification.io import load_image
    from verification.uploads import expand_uploads

    files = [(Path(p).name, Path(p).read_bytes()) for p in args["files"]]
    expanded = expand_uploads(files)
    try:
        from ui.loaders import images_from_blobs  # the sidebar's own loop (st.cache_data outside a server)

        items, errors = images_from_blobs(expanded.blobs)
        images = [i.image for i in items]
    except ImportError:
        images, errors = [], []
        for blob in expanded.blobs:
            try:
                images.append(load_image(blob.data, name=blob.name))
            except VerificationError as exc:
                errors.append(f"{blob.name}: {exc}")
    wrong = next((w for w in map(_check_image, images) if w), None)
    long = [e for e in errors if len(e) > MAX_MESSAGE]
    if long:
        wrong = f"an error line of {len(long[0]):,} characters"
    if spec["expect"] == "load" and len(images) < 2:
        wrong = f"only {len(images)} images loaded: {errors[:2]}"
    if not images and errors and not wrong:  # every file refused, each with a typed error: a typed outcome
        return {"typed_error": errors[0], "summary": f"0 images, {len(errors)} error lines"}
    return {
        "wrong": wrong,
        "summary": f"{len(images)} images, {len(errors)} error lines, {len(expanded.skipped)} skipped",
    }


def _probe_image() -> Any:
    from verification.io import load_image

    return load_image(ROOT / "assets" / "demo" / "images" / "test" / "001_nodule.png")


def op_load_model(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from verification.io import load_model, to_tensor

    model = load_model(args["path"], sidecar=args.get("sidecar"))
    wrong = None
    if not all(math.isfinite(v) for v in (*model.mean, *model.std)):
        wrong = f"non-finite normalisation mean={model.mean} std={model.std}"
    else:
        x = to_tensor(_probe_image(), model)
        with torch.no_grad():
            out = model.module(x)
        if not torch.isfinite(out).all():
            wrong = "the loaded model gives non-finite outputs on a real image"
    return {"wrong": wrong, "summary": f"{model.source_format} {model.architecture} {model.input_size}"}


def op_upload_model(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The dashboard's model upload: weights and sidecar as bytes → ui.loaders.upload_spec / get_model."""
    import torch

    from ui.loaders import get_model, upload_spec
    from verification.io import to_tensor

    sidecar = Path(args["sidecar"]).read_bytes() if args.get("sidecar") else None
    model, _ = get_model(
        upload_spec(Path(args["path"]).name, Path(args["path"]).read_bytes(), sidecar_bytes=sidecar)
    )
    wrong = None
    if not all(math.isfinite(v) for v in (*model.mean, *model.std)):
        wrong = f"non-finite normalisation mean={model.mean} std={model.std}"
    else:
        with torch.no_grad():
            out = model.module(to_tensor(_probe_image(), model))
        if not torch.isfinite(out).all():
            wrong = "the loaded model gives non-finite outputs on a real image"
    return {"wrong": wrong, "summary": f"{model.source_format} {model.architecture}"}


def op_load_bundle(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """A reference bundle from disk (``verify --bundle``) and from bytes (the dashboard's upload)."""
    import warnings

    import numpy as np

    from verification.reference import load_bundle, load_bundle_bytes

    stem = Path(args["path"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bundle = load_bundle(stem)
        again = load_bundle_bytes(
            stem.with_suffix(".npz").read_bytes(), stem.with_suffix(".json").read_bytes()
        )
    wrong = None
    refs = np.asarray(bundle.references)
    if not np.isfinite(refs).all():
        wrong = "the bundle's reference maps hold NaN/inf"
    elif refs.ndim != 3 or refs.shape[0] != len(bundle.class_names):
        wrong = f"references of shape {refs.shape} for {len(bundle.class_names)} classes"
    elif not np.array_equal(refs, np.asarray(again.references)):
        wrong = "load_bundle and load_bundle_bytes disagree"
    return {"wrong": wrong, "summary": f"{len(bundle.class_names)} classes, references {refs.shape}"}


def _array(value: Any) -> Any:
    import numpy as np

    if isinstance(value, str) and value.endswith(".npy"):
        return np.load(value, allow_pickle=False)
    return value


def op_compute_metrics(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from verification.metrics import METRICS, compute_metrics

    maps, refs = _array(args["maps"]), _array(args["refs"])
    kwargs = dict(args["kwargs"])
    if "size" in kwargs:
        kwargs["size"] = tuple(kwargs["size"])
    values = compute_metrics(maps, refs, **kwargs)
    wrong = None
    m = np.asarray(maps, dtype=np.float64)
    r = np.asarray(refs, dtype=np.float64)
    n = max(m.shape[0], r.shape[0]) if m.ndim == 3 and r.ndim == 3 else None
    bad_rows: set[int] = set()
    if m.ndim == 3 and r.ndim == 3:
        bad_rows = {i for i in range(m.shape[0]) if not np.isfinite(m[i]).all()}
        if not np.isfinite(r).all():
            bad_rows |= set(range(n or 0))
    for name, vals in values.items():
        if n is not None and vals.shape != (n,):
            wrong = f"{name}: {vals.shape[0]} values for {n} maps"
            break
        lo, hi = METRICS[name].range
        for i, v in enumerate(vals):
            if math.isnan(v) and i not in values.reasons.get(name, {}):
                wrong = f"{name}[{i}] is NaN without a reason"
                break
            if i in bad_rows:
                if not (math.isnan(v) and i in values.reasons.get(name, {})):
                    wrong = f"{name}[{i}] = {v} for a map with NaN/inf (should be NaN with a reason)"
                    break
            elif not math.isnan(v) and not (lo - 1e-6 <= v <= hi + 1e-6):
                wrong = f"{name}[{i}] = {v} outside {METRICS[name].range}"
                break
        if wrong:
            break
    return {"wrong": wrong, "summary": f"{len(values)} metrics × {n}"}


def op_compute_cams(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    from verification.cam import compute_cams
    from verification.io import load_model

    model = load_model(args["model"])
    x = _array(args["x"])
    x = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    results = compute_cams(model, x, **args["kwargs"])
    wrong = None
    for res in results:
        maps = np.asarray(res.maps)
        if maps.shape[0] != x.shape[0]:
            wrong = f"{res.method}: {maps.shape[0]} maps for {x.shape[0]} inputs"
        elif not np.isfinite(maps).all() or (maps.size and (maps.min() < 0 or maps.max() > 1 + 1e-6)):
            wrong = f"{res.method}: maps not finite in [0, 1]"
        if wrong:
            break
    return {"wrong": wrong, "summary": f"{len(results)} results"}


def op_cams_threads(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    import threading

    import numpy as np

    from verification.cam import compute_cams
    from verification.io import load_image, load_model, to_tensor

    model = load_model(args["model"])
    xs = [to_tensor(load_image(p), model) for p in args["images"]]
    jobs = [(i % len(xs), m) for i in range(6) for m in ("gradcam", "layercam")]
    expected = {(i, m): compute_cams(model, xs[i], methods=[m])[0].maps for i, m in set(jobs)}
    got: dict[tuple[int, str], list[Any]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work(k: int) -> None:
        try:
            barrier.wait()
            for rep in range(3):
                i, m = jobs[(k * 3 + rep) % len(jobs)]
                got.setdefault((i, m), []).append(compute_cams(model, xs[i], methods=[m])[0].maps)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=100)
    if errors:
        raise errors[0]
    wrong = None
    for key, maps in got.items():
        if not all(np.allclose(m, expected[key], atol=1e-5) for m in maps):
            wrong = f"thread result for {key} differs from the sequential one"
    return {"wrong": wrong, "summary": f"{sum(map(len, got.values()))} concurrent calls"}


def _run_cli(argv: list[str]) -> int:
    from verification.cli import main

    return main(argv)


def op_cli(args: dict[str, Any], spec: dict[str, Any], *, proc: bool = False) -> dict[str, Any]:
    logs = _logs(Path(spec["root"]))
    err_file = logs / f"{_safe(spec['id'])}.stderr"
    out_file = logs / f"{_safe(spec['id'])}.stdout"
    if proc:
        cap = resource.getrlimit(resource.RLIMIT_AS)[0]
        with open(err_file, "wb") as e, open(out_file, "wb") as o:
            rc = subprocess.run(
                [sys.executable, "-m", "verification", *args["argv"]],
                cwd=args["cwd"],
                stdout=o,
                stderr=e,
                timeout=float(spec.get("timeout_s", 90)) - 5,
                check=False,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (cap, cap)),
            ).returncode
    else:
        saved = os.dup(1), os.dup(2)
        with open(err_file, "wb") as e, open(out_file, "wb") as o:
            os.dup2(o.fileno(), 1)
            os.dup2(e.fileno(), 2)
            try:
                rc = _run_cli(list(args["argv"]))
            except SystemExit as exc:
                rc = int(exc.code or 0)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    stderr = err_file.read_text(errors="replace")
    lines = [line for line in stderr.splitlines() if line.strip()]
    summary = f"exit {rc}; stderr: {' | '.join(lines)[:200]}"
    if "Traceback" in stderr or any(line.startswith("internal error") for line in lines):
        raise _CliCrash(f"exit {rc}: {(lines or [''])[-1][:300]}")
    expect = spec["expect"]
    if rc == 1:
        if len(lines) != 1 or not lines[0].startswith("error: "):
            raise _CliCrash(f"exit 1 without one clear 'error:' line on stderr: {lines[:3]}")
        message = lines[0].removeprefix("error: ")
        untyped = re.match(r"([A-Za-z_][\w.]*(?:Error|Exception|Warning)): ", message)
        if untyped and untyped.group(1) not in ("FileNotFoundError",):
            # the CLI names the exception type only when it is not one of verification.errors
            raise _CliCrash(f"exit 1 with an untyped {message[:300]}")
        return {"typed_error": message, "summary": summary}
    if rc not in (0, 3, 4):  # 3, 4: verify's UNSUITABLE / CANNOT VERIFY
        raise _CliCrash(f"exit {rc}: {lines[-3:]}")
    wrong = None
    out = Path(args["out"])
    if expect == "rows":
        manifest = json.loads((out / "manifest.json").read_text())
        entries = manifest["images"]
        missing = [e["path"] for e in entries if not e.get("error") and not e.get("npz")]
        good = [e for e in entries if Path(e["path"]).name.startswith("00")]
        if len(entries) != args["n_images"]:
            wrong = f"manifest lists {len(entries)} of {args['n_images']} images"
        elif missing or len([g for g in good if g.get("npz")]) != args["n_good"]:
            wrong = f"entries without output or error: {missing[:3]}"
        elif manifest["n_errors"] != sum(1 for e in entries if e.get("error")):
            wrong = "n_errors does not count the error rows"
        summary += f"; {len(entries)} rows, {manifest['n_errors']} errors"
    elif expect == "verify_rows":
        doc = json.loads((out / "result.json").read_text())
        n_rows, n_err = len(doc.get("images", doc.get("rows", []))), len(doc["errors"])
        csv_lines = (out / "table.csv").read_text().strip().splitlines()
        if n_rows + n_err != args["n_images"] or n_rows < args["n_good"]:
            wrong = f"{n_rows} rows + {n_err} errors for {args['n_images']} images"
        elif len(csv_lines) - 1 != args["n_images"]:
            wrong = f"CSV has {len(csv_lines) - 1} rows for {args['n_images']} images"
        summary += f"; {n_rows} rows, {n_err} error rows"
    return {"wrong": wrong, "summary": summary}


class _CliCrash(Exception):
    """The CLI failed without a clean one-line error (traceback, 'internal error', several lines)."""


def op_cli_proc(args: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    return op_cli(args, spec, proc=True)


OPS: dict[str, Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "load_image": op_load_image,
    "upload": op_upload,
    "load_model": op_load_model,
    "compute_metrics": op_compute_metrics,
    "upload_model": op_upload_model,
    "load_bundle": op_load_bundle,
    "compute_cams": op_compute_cams,
    "cams_threads": op_cams_threads,
    "cli": op_cli,
    "cli_proc": op_cli_proc,
}


if __name__ == "__main__":
    (Path(json.loads(Path(sys.argv[1]).read_text())["root"]) / "work").mkdir(parents=True, exist_ok=True)
    zygote(Path(sys.argv[1]), Path(sys.argv[2]))
