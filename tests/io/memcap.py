"""Run one loader call in a child process whose address space is capped, and measure its peak memory.

The child imports the backend first, then caps ``RLIMIT_AS`` at what it has mapped plus ``cap_bytes``, so a
loader that allocates past the budget fails there (MemoryError or a killed child) instead of on the machine.
Peak working memory = peak resident size (``VmHWM``, reset through ``/proc/self/clear_refs`` just before the
call) minus the resident size just before the call.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

_CHILD = r"""
import json, resource, sys, traceback
sys.path.insert(0, {root!r})
import numpy, torch  # noqa: F401  (mapped before the cap)
import verification.io.images, verification.io.models, ui.uploads  # noqa: F401

def _kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    return 0

args = json.loads(sys.argv[1])
data = [open(p, "rb").read() for p in args["paths"]]
vm = _kb("VmSize:") * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + args["cap"], vm + args["cap"]))
before = _kb("VmRSS:")
with open("/proc/self/clear_refs", "w") as fh:  # resets VmHWM (peak RSS) to the current RSS
    fh.write("5")
out = {{"outcome": "loaded", "error": None, "message": ""}}
try:
{body}
except MemoryError as exc:
    out = {{"outcome": "crash", "error": "MemoryError", "message": str(exc)[:300]}}
except Exception as exc:
    from verification.errors import VerificationError
    kind = "typed" if isinstance(exc, VerificationError) else "crash"
    out = {{"outcome": kind, "error": type(exc).__name__, "message": str(exc)[:300]}}
out["peak_bytes"] = max(0, _kb("VmHWM:") - before) * 1024
print("RESULT " + json.dumps(out))
"""


def run_capped(body: str, paths: list[Path], cap_bytes: int, timeout: float = 120.0) -> dict[str, object]:
    """Run ``body`` (Python, sees ``data``: the files' bytes) in a capped child; its outcome and peak bytes.

    ``outcome`` is "loaded", "typed" (a VerificationError), "crash" (anything else, MemoryError included) or
    "killed" (no result: the child died).
    """
    root = str(Path(__file__).resolve().parents[2])
    code = _CHILD.format(root=root, body=textwrap.indent(textwrap.dedent(body).strip(), "    "))
    args = json.dumps({"paths": [str(p) for p in paths], "cap": int(cap_bytes)})
    proc = subprocess.run(
        [sys.executable, "-c", code, args], capture_output=True, text=True, timeout=timeout, check=False
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[len("RESULT ") :]))
    return {"outcome": "killed", "error": f"exit {proc.returncode}", "message": proc.stderr[-500:]}
