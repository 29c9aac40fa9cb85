"""A throw-away Orthanc PACS with its DICOMweb plugin, for tests, benchmarks and trying the PACS source.

Orthanc runs on 127.0.0.1 (free ports), with its storage and configuration in a temporary folder that goes
when it stops, HTTP basic authentication on (one user), remote access off, and the DICOMweb plugin at
``/dicom-web/``. Startup is bounded: ``/system`` is polled until it answers or ``timeout`` passes.

Command line (runs until Ctrl-C, prints the DICOMweb root and the environment variables to use)::

    python -m verification.pacs.orthanc --seed demo            # the demo's DICOMs + pydicom-data radiographs
    python -m verification.pacs.orthanc --seed demo --seed my_folder/ --port 8042

The user and password come from ``VERIFICATION_DICOMWEB_USER`` / ``VERIFICATION_DICOMWEB_PASSWORD`` when
set; otherwise a random password is made and printed once (this is a local test server).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

from verification.errors import PacsError, PacsUnavailableError

__all__ = [
    "ORTHANC",
    "PLUGIN",
    "OrthancServer",
    "demo_dicoms",
    "orthanc_missing",
    "stop_process",
]

ORTHANC = Path(os.environ.get("VERIFICATION_ORTHANC", "/usr/sbin/Orthanc"))
PLUGIN = Path(
    os.environ.get("VERIFICATION_ORTHANC_DICOMWEB", "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
)
ROOT = Path(__file__).resolve().parents[2]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """End a server process started for a local run: SIGTERM, then SIGKILL if it has not exited within
    ``timeout`` s."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def orthanc_missing() -> str | None:
    """Why Orthanc with DICOMweb cannot be started here (None when it can)."""
    if not (ORTHANC.is_file() and os.access(ORTHANC, os.X_OK)):
        return f"Orthanc is not installed at {ORTHANC} (apt-get install orthanc orthanc-dicomweb)"
    if not PLUGIN.is_file():
        return f"the Orthanc DICOMweb plugin is not at {PLUGIN} (apt-get install orthanc-dicomweb)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def demo_dicoms() -> list[Path]:
    """The demo's DICOM samples and the real radiographs of pydicom-data (RG1_UNCR chest CR, RG3_UNCR)."""
    files = sorted((ROOT / "assets" / "demo" / "samples").glob("*.dcm"))
    try:
        from pydicom.data import get_testdata_file

        for name in ("RG1_UNCR.dcm", "RG3_UNCR.dcm"):
            found = get_testdata_file(name)
            if found:
                files.append(Path(str(found)))
    except (ImportError, ValueError, OSError):  # pydicom-data absent: the demo samples alone
        pass
    return files


class OrthancServer:
    """Start Orthanc in a temporary folder; ``with OrthancServer() as pacs: pacs.dicomweb_url``.

    ``stop`` (or leaving the block) terminates it and removes the folder. ``user``/``password`` are the one
    registered account; requests without them are refused (HTTP 401).
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        user: str = "verifier",
        password: str | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        missing = orthanc_missing()
        if missing:
            raise PacsUnavailableError(missing)
        self.port = port or _free_port()
        self.user = user
        self.password = password or secrets.token_urlsafe(16)
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="verification-orthanc-"))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: object | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.workdir / "orthanc.log"

    def config(self) -> dict[str, object]:
        storage = str(self.workdir / "db")
        return {
            "Name": "verification-test-pacs",
            "StorageDirectory": storage,
            "IndexDirectory": storage,
            "HttpPort": self.port,
            "DicomPort": _free_port(),
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "HttpTimeout": 30,
            "StorageCompression": False,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 8,
            "Plugins": [str(PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "Ssl": False},
        }

    def start(self, *, timeout: float = 30.0) -> OrthancServer:
        """Write the configuration, start Orthanc, wait (at most ``timeout`` s) until ``/system`` answers."""
        (self.workdir / "db").mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "orthanc.json"
        cfg.write_text(json.dumps(self.config(), indent=1), encoding="utf-8")
        cfg.chmod(0o600)  # holds the password
        log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self._log = log
        self._proc = subprocess.Popen(
            [str(ORTHANC), str(cfg)],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise PacsUnavailableError(f"Orthanc exited at startup with status {code}; see its log")
            try:
                self._request("/system", timeout=2.0)
                return self
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise PacsUnavailableError(f"Orthanc did not answer on {self.url} within {timeout:.0f} s")
            time.sleep(0.1)

    def _request(
        self, path: str, data: bytes | None = None, *, timeout: float = 30.0, content_type: str | None = None
    ) -> bytes:
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data is not None else "GET")
        req.add_header("Authorization", f"Basic {token}")
        if content_type:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return bytes(resp.read())

    def upload(self, data: bytes) -> dict[str, object]:
        """Store one DICOM file through Orthanc's own REST API (not STOW-RS: seeding stays independent of the
        client under test). Returns Orthanc's answer (``ID``, ``ParentStudy``, ``Status``)."""
        try:
            answer = json.loads(self._request("/instances", data, content_type="application/dicom"))
        except urllib.error.HTTPError as exc:
            raise PacsError(f"Orthanc refused an instance (HTTP {exc.code}); is it a DICOM file?") from None
        if not isinstance(answer, dict):
            raise PacsError("Orthanc answered the upload with something other than a JSON object")
        return answer

    def seed(self, files: Iterable[str | Path]) -> int:
        """Upload DICOM files (folders are searched recursively for *.dcm); returns how many were stored."""
        n = 0
        for f in files:
            path = Path(f)
            paths = sorted(path.rglob("*.dcm")) if path.is_dir() else [path]
            for p in paths:
                self.upload(p.read_bytes())
                n += 1
        return n

    def stop(self) -> None:
        """Terminate Orthanc (SIGTERM, then SIGKILL after 10 s) and remove its temporary folder."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            stop_process(proc)
        log, self._log = self._log, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> OrthancServer:
        return self.start() if self._proc is None else self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verification.pacs.orthanc",
        description="Run a local Orthanc PACS with DICOMweb in a temporary folder until Ctrl-C.",
    )
    parser.add_argument(
        "--seed",
        action="append",
        default=[],
        help="'demo' (the demo DICOMs and pydicom-data radiographs), or DICOM files/folders; repeatable",
    )
    parser.add_argument("--port", type=int, default=None, help="HTTP port (default: a free one)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for startup")
    args = parser.parse_args(argv)
    user = os.environ.get("VERIFICATION_DICOMWEB_USER") or "verifier"
    password = os.environ.get("VERIFICATION_DICOMWEB_PASSWORD")
    generated = password is None
    server = OrthancServer(port=args.port, user=user, password=password)
    try:
        server.start(timeout=args.timeout)
        files: list[Path] = []
        for item in args.seed:
            files.extend(demo_dicoms() if item == "demo" else [Path(item)])
        n = server.seed(files)
        print(f"Orthanc with DICOMweb at {server.dicomweb_url} ({n} instance(s) seeded); Ctrl-C stops it.")
        print(f"export VERIFICATION_DICOMWEB_USER={user}")
        if generated:
            print(f"export VERIFICATION_DICOMWEB_PASSWORD={server.password}")
        print(f"python -m verification.pacs search dicomweb+{server.dicomweb_url}", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        while server._proc is not None and server._proc.poll() is None:
            time.sleep(0.5)
        return 1
    except KeyboardInterrupt:
        return 0
    except PacsError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    finally:
        server.stop()


if __name__ == "__main__":
    raise SystemExit(main())
