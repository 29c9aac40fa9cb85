"""The sidebar's PACS image source: a DICOMweb server, patient-independent filters, a study picked from a list
that shows no identifying tag (date, modality, description, counts), its instances retrieved through the
upload path (one budget, the same loader), and an opt-in button that stores the current heatmap back into the
study as a new series.

The server's address comes from the text box (default ``VERIFICATION_DICOMWEB_URL``); credentials only from
the environment of the dashboard's process (``VERIFICATION_DICOMWEB_USER`` / ``_PASSWORD`` or ``_TOKEN``),
never from the page.
"""

from __future__ import annotations

import io
import os
import threading
from dataclasses import dataclass

import streamlit as st

from ui import loaders
from ui.widgets import guard
from verification.errors import PacsError
from verification.io.records import LoadedModel
from verification.pacs import (
    InstanceRef,
    PacsClient,
    PacsConfig,
    PacsSource,
    StudyInfo,
    parse_source,
)
from verification.uploads import expand_uploads

URL_KEY = "pacs_url"
STUDY_KEY = "pacs_study"
FILTER_KEYS = {"modality": "pacs_modality", "body_part": "pacs_body_part", "date": "pacs_date"}
ACCESSION_KEY = "pacs_accession"
ORIGINS_KEY = "pacs_origins"  # content hash → Origin of every image retrieved in this session
ENV_URL = "VERIFICATION_DICOMWEB_URL"
PLACEHOLDER = "dicomweb+http://127.0.0.1:8042/dicom-web"


@dataclass(frozen=True)
class Origin:
    root: str
    ref: InstanceRef
    data: bytes


def _client(root: str) -> PacsClient:
    return PacsClient(PacsConfig.from_env(PacsSource(root)))


@st.cache_data(show_spinner=False, ttl=30, max_entries=32)
def _search(root: str, modality: str, body_part: str, date: str, accession: str) -> list[StudyInfo]:
    with _client(root) as client:
        return client.search_studies(
            modality=modality or None,
            body_part=body_part or None,
            date=date or None,
            accession=accession or None,
        )


@st.cache_data(show_spinner=False, ttl=300, max_entries=4)
def _retrieve(root: str, study: str) -> list[tuple[str, InstanceRef, bytes]]:
    with _client(root) as client:
        items = client.retrieve(PacsSource(root, study), retain=False)
    return [(f"pacs_{i + 1:03d}.dcm", item.ref, item.data) for i, item in enumerate(items)]


def image_set() -> loaders.ImageSet | None:
    """Draw the PACS source's widgets; the chosen study's images, or None (none chosen, or an error shown)."""
    if URL_KEY not in st.session_state:
        st.session_state[URL_KEY] = os.environ.get(ENV_URL, "")
    url = st.text_input(
        "DICOMweb server",
        key=URL_KEY,
        placeholder=PLACEHOLDER,
        help="The server's DICOMweb root. Credentials come from the dashboard's environment "
        "(VERIFICATION_DICOMWEB_USER and _PASSWORD, or _TOKEN), never from this page.",
    ).strip()
    if not url:
        st.caption(f"Give a DICOMweb address, e.g. `{PLACEHOLDER}`.")
        return None
    with st.expander("Filters", expanded=False):
        filters = {
            "modality": st.text_input("Modality", key=FILTER_KEYS["modality"], placeholder="CR, DX"),
            "body_part": st.text_input("Body part", key=FILTER_KEYS["body_part"], placeholder="CHEST"),
            "date": st.text_input("Study date", key=FILTER_KEYS["date"], placeholder="YYYYMMDD[-YYYYMMDD]"),
        }
        accession = st.text_input(
            "Accession number", key=ACCESSION_KEY, type="password", help="matched, never shown"
        )
    studies: list[StudyInfo] = []
    with guard("Searching the PACS") as failed:
        root = parse_source(url).root
        studies = _search(
            root,
            filters["modality"].strip(),
            filters["body_part"].strip(),
            filters["date"].strip(),
            accession.strip(),
        )
    if failed:
        return None
    if not studies:
        st.caption("No study matches.")
        return None
    labels: dict[str, str] = {s.study_uid: s.label() for s in studies}
    if st.session_state.get(STUDY_KEY) not in labels:
        st.session_state[STUDY_KEY] = studies[0].study_uid
    study = st.selectbox("PACS study", list(labels), format_func=lambda uid: labels[uid], key=STUDY_KEY)
    chosen: loaders.ImageSet | None = None
    with guard("Retrieving the study from the PACS"):
        with st.spinner("Retrieving…"):
            retrieved = _retrieve(root, str(study))
        # The upload path: one budget over all of them (decoded sizes from the headers), the same loader.
        expanded = expand_uploads([(name, data) for name, _, data in retrieved])
        items, errors = loaders.images_from_blobs(expanded.blobs)
        for message in errors:
            st.error(message, icon=":material/broken_image:")
        origins: dict[str, Origin] = st.session_state.setdefault(ORIGINS_KEY, {})
        by_name = {name: (ref, data) for name, ref, data in retrieved}
        for item in items:
            ref, data = by_name[item.image.name]
            origins[item.image.content_hash] = Origin(root, ref, data)
        if items:
            chosen = loaders.ImageSet(label=f"PACS study {labels[str(study)]}", items=tuple(items))
    return chosen


def store_section(
    model: LoadedModel | None, lock: threading.Lock | None, image: loaders.WorkingImage | None
) -> None:
    """The opt-in write-back: a button that stores model A's Grad-CAM of the current image (predicted class,
    default layer) into the image's study as a Secondary Capture overlay in a new series."""
    origins: dict[str, Origin] = st.session_state.get(ORIGINS_KEY, {})
    origin = origins.get(image.image.content_hash) if image is not None else None
    if model is None or lock is None or image is None or origin is None:
        return
    if not st.button(
        "Store heatmap in the PACS",
        help="Model A's Grad-CAM of this image, blended over it, as a new series of the same study "
        "(model, method, layer and verdict recorded in the object).",
    ):
        return
    with guard("Storing the heatmap in the PACS") as failed:
        stored = _store(model, lock, image, origin)
    if not failed:
        st.success(f"Stored in the study as a new series: {stored}", icon=":material/cloud_done:")


def _store(model: LoadedModel, lock: threading.Lock, item: loaders.WorkingImage, origin: Origin) -> str:
    import pydicom

    from verification.cam import compute_cams
    from verification.io.images import to_tensor
    from verification.pacs import HeatmapResult, store_overlays

    with lock:
        (cam,) = compute_cams(model, to_tensor(item.image, model), methods=["gradcam"])
    target = cam.targets[0]
    result = HeatmapResult(
        source=pydicom.dcmread(io.BytesIO(origin.data), stop_before_pixels=True),
        display=item.image.display,
        cam=cam.maps[0],
        model=model.name,
        method=cam.method,
        layer=cam.layer,
        target=model.class_name(target),
        verdict="not verified",
    )
    with _client(origin.root) as client:
        (ds,) = store_overlays(client, [result])
    if not isinstance(ds.SeriesDescription, str):
        raise PacsError("the stored object has no series description")
    return str(ds.SeriesDescription)
