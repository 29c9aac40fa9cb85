"""Run loader calls in a child process whose address space is capped, and measure each call's peak memory.

The child imports the backend first, then caps ``RLIMIT_AS`` at what it has mapped plus ``cap_bytes``, so a
loader that allocates past the budget fails there (MemoryError or a killed child) instead of on the machine.
Peak working memory of a call = peak resident size (``VmHWM``, reset through ``/proc/self/clear_refs`` just
before the call) minus the resident size just before it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

_CHILD = r"""
import gc, json, resource, sys
sys.path.insert(0, ROOT)
import numpy, torch  # noqa: F401  (mapped before the cap)
import verification.io.images, verification.io.models, verification.uploads  # noqa: F401
import verification.batch, verification.cam.records  # noqa: F401  (the saved-result readers)
from verification.errors import VerificationError

def _kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0

args = json.loads(sys.argv[1])
data = [open(p, "rb").read() for p in args["paths"]]
vm = _kb("VmSize:") * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + args["cap"], vm + args["cap"]))
for body in args["bodies"]:
    gc.collect()
    before = _kb("VmRSS:")
    with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM (peak RSS) to the current RSS
        fh.write("5")
    out = {"outcome": "loaded", "error": None, "message": ""}
    try:
        exec(body, {"data": data, "verification": verification})
    except MemoryError as exc:
        out = {"outcome": "crash", "error": "MemoryError", "message": str(exc)[:300]}
    except Exception as exc:
        kind = "typed" if isinstance(exc, VerificationError) else "crash"
        out = {"outcome": kind, "error": type(exc).__name__, "message": str(exc)[:300]}
    out["peak_bytes"] = max(0, _kb("VmHWM:") - before) * 1024
    print("RESULT " + json.dumps(out), flush=True)
"""


def run_capped_many(
    bodies: list[str], paths: list[Path], cap_bytes: int, timeout: float = 300.0
) -> list[dict[str, object]]:
    """Run each of ``bodies`` (Python that sees ``data``: the files' bytes) in one capped child, in turn.

    Each result's ``outcome`` is "loaded", "typed" (a VerificationError), "crash" (anything else,
    MemoryError included) or "killed" (no result: the child died), with ``peak_bytes`` of that call.
    """
    root = str(Path(__file__).resolve().parents[2])
    code = _CHILD.replace("ROOT", repr(root))
    args = json.dumps({"paths": [str(p) for p in paths], "cap": int(cap_bytes), "bodies": bodies})
    proc = subprocess.run(
        [sys.executable, "-c", code, args], capture_output=True, text=True, timeout=timeout, check=False
    )
    results = [
        dict(json.loads(line[len("RESULT ") :]))
        for line in proc.stdout.splitlines()
        if line.startswith("RESULT ")
    ]
    dead = {"outcome": "killed", "error": f"exit {proc.returncode}", "message": proc.stderr[-500:]}
    return results + [dead] * (len(bodies) - len(results))


def run_capped(body: str, paths: list[Path], cap_bytes: int, timeout: float = 300.0) -> dict[str, object]:
    """:func:`run_capped_many` for one body."""
    return run_capped_many([body], paths, cap_bytes, timeout)[0]
