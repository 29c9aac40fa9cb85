"""A real PACS for the tests: Orthanc with its DICOMweb plugin on a free local port, its storage in a
temporary folder, authentication on, seeded with the demo's DICOMs and pydicom-data's radiographs (RG1_UNCR
chest CR, RG3_UNCR), stopped after the session. Skips with the reason when Orthanc or its plugin is not
installed."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest

from verification.pacs import PacsConfig
from verification.pacs.orthanc import OrthancServer, demo_dicoms, orthanc_missing


@dataclass(frozen=True)
class Pacs:
    server: OrthancServer
    files: tuple[Path, ...]
    studies: dict[str, str] = field(default_factory=dict)  # file name → StudyInstanceUID

    @property
    def root(self) -> str:
        return self.server.dicomweb_url

    @property
    def env(self) -> dict[str, str]:
        return {
            "VERIFICATION_DICOMWEB_USER": self.server.user,
            "VERIFICATION_DICOMWEB_PASSWORD": self.server.password,
        }

    def source(self, name: str) -> str:
        return f"dicomweb+{self.root}/studies/{self.studies[name]}"

    def config(self, **options: Any) -> PacsConfig:
        return PacsConfig(root=self.root, user=self.server.user, password=self.server.password, **options)


def _needs_orthanc() -> None:
    missing = orthanc_missing()
    if missing:
        pytest.skip(missing)
    pytest.importorskip("dicomweb_client")


@pytest.fixture(scope="session")
def pacs() -> Iterator[Pacs]:
    _needs_orthanc()
    files = tuple(demo_dicoms())
    with OrthancServer(password="s3cret-test-pw") as server:
        server.seed(files)
        studies = {f.name: str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
        yield Pacs(server, files, studies)


@pytest.fixture
def small_pacs() -> Iterator[Pacs]:
    """A second Orthanc of its own (2 instances), for tests that stop the server."""
    _needs_orthanc()
    samples = sorted((Path(__file__).resolve().parents[2] / "assets/demo/samples").glob("*.dcm"))
    files = (samples[0], samples[2])  # a CR and a DX film: two series, so two WADO-RS requests
    server = OrthancServer(password="another-pw").start()
    try:
        server.seed(files)
        studies = {f.name: str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in files}
        yield Pacs(server, files, studies)
    finally:
        server.stop()
