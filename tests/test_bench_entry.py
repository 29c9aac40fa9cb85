"""Every benchmark starts the way the README writes it: ``python bench/<name>.py`` (a file, whose directory,
not the repository root, is on ``sys.path``) and ``python -m bench.<name>``.

One child process runs every script's ``--help`` in turn, as Python runs a file: ``sys.path[0]`` is
``bench/``, the repository root is not importable, and the project's modules are forgotten between scripts
(so one script's path fix cannot hide another's missing one). Two more children run the metrics benchmark
by its path and as a module, for real.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "bench").glob("*.py") if p.name != "__init__.py")

_CHILD = r"""
import contextlib, io, json, runpy, sys
root, paths = sys.argv[1], sys.argv[2:]
clean_path = [p for p in sys.path if p not in ("", ".", root)]
results = {}
for path in paths:
    for name in [m for m in sys.modules if m.split(".")[0] in ("verification", "bench", "ui", "tests")]:
        del sys.modules[name]
    sys.path[:] = [path.rsplit("/", 1)[0], *clean_path]
    sys.argv = [path, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:  # the failure under test: ModuleNotFoundError and the like
        code = f"{type(exc).__name__}: {exc}"
    results[path] = [code, "usage" in out.getvalue().lower()]
print(json.dumps(results))
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_every_bench_script_runs_as_a_file(tmp_path: Path) -> None:
    import json

    paths = [str(ROOT / "bench" / name) for name in SCRIPTS]
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), *paths],
        cwd=tmp_path,  # not the repository: the current directory must not make `verification` importable
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    bad = {Path(p).name: code for p, (code, _) in results.items() if code != 0}
    assert not bad, f"`python bench/<name>.py --help` fails for {bad}"
    no_usage = [Path(p).name for p, (_, usage) in results.items() if not usage]
    assert not no_usage, f"--help printed no usage for {no_usage}"


def test_the_child_would_catch_a_missing_path_fix(tmp_path: Path) -> None:
    """The check can fail: a script that imports the project without the fix is reported."""
    script = tmp_path / "bench_probe.py"
    script.write_text("import argparse\nimport verification\nargparse.ArgumentParser().parse_args()\n")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(ROOT), str(script)],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "ModuleNotFoundError" in proc.stdout


@pytest.mark.parametrize("form", ["file", "module"])
def test_metrics_bench_starts_both_ways(form: str) -> None:
    cmd = [sys.executable, "bench/metrics.py"] if form == "file" else [sys.executable, "-m", "bench.metrics"]
    proc = subprocess.run([*cmd, "--help"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage" in proc.stdout.lower()
