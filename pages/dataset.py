"""Dataset check: a whole folder or zip verified against the reference, with progress, table and charts."""

from __future__ import annotations

import streamlit as st

from ui import evidence, figures, glossary, loaders
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import choice, guard
from verification import server_paths
from verification.errors import ImageLoadError

st.title("Dataset check", anchor=False)
st.caption(
    "Verify many images at once against the reference bundle. A zip (or a folder) with one subfolder per "
    "class — `normal/…`, `nodule/…` — also gives the accuracy; images are read chunk by chunk, so the "
    "dataset does not have to fit in memory."
)
ws = workspace(images=False, bundle=True)

K.DATASET_SOURCE.init()
# A folder on the *server*: offered only when the operator allows folders (off by default;
# verification/server_paths.py)
server_folders = server_paths.enabled()
if K.DATASET_SOURCE.get() == "folder" and not server_folders:
    K.DATASET_SOURCE.set("upload")
offered = {
    "upload": "Upload a zip or images",
    "folder": "A folder on the server",
    "current": "The images in the sidebar",
}
if not server_folders:
    del offered["folder"]
source = choice(K.DATASET_SOURCE, "Dataset", offered, horizontal=True)
files = None
folder = ""
if source == "upload":
    files = st.file_uploader(
        "Zip of class folders, or images",
        type=["zip", "png", "jpg", "jpeg", "tif", "tiff", "dcm", "dicom"],
        accept_multiple_files=True,
        key=K.DATASET_UPLOAD.name,
    )
elif source == "folder":
    folder = st.text_input(
        "Folder path", key=K.DATASET_FOLDER.name, placeholder=str(server_paths.allowed_roots()[0])
    )
    st.caption(f"Folders inside {server_paths.describe_roots()} on the server running this app.")

faithful = evidence.faithfulness_switch()
if st.button("Run the check", type="primary", icon=":material/play_arrow:"):
    with guard("Dataset check"):
        bar = st.progress(0.0, text="Verifying…")

        def moved(done: int, total: int) -> None:
            bar.progress(done / max(total, 1), text=f"{done} of {total} images verified")

        model = ws.model_a
        if source == "current":
            if ws.images is None:
                raise ImageLoadError("No images are loaded in the sidebar.")
            report = loaders.verify_set(
                model.model, model.lock, ws.bundle, ws.images, faithfulness=faithful, progress=moved
            )
            result = loaders.DatasetResult(label=ws.images.label, report=report)
        else:
            if source == "upload":
                if not files:
                    raise ImageLoadError("Upload a zip or some images first.")
                sources, skipped = loaders.sources_from_upload([(f.name, f.getvalue()) for f in files])
                label = ", ".join(f.name for f in files)
                if skipped:
                    st.caption(f"Skipped {len(skipped)} non-image file(s).")
            else:
                sources, label = loaders.sources_from_folder(folder), folder
            result = loaders.verify_sources(
                model.model,
                model.lock,
                ws.bundle,
                sources,
                label=label,
                faithfulness=faithful,
                progress=moved,
            )
        bar.empty()
        K.DATASET_RESULT.set(result)

result = K.DATASET_RESULT.get()
if result is None:
    st.info("Choose a dataset and press **Run the check**.")
    st.stop()

report = result.report
evidence.verdict_banner(report, f"Model on {result.label}")
evidence.verdict_metrics(report)
if report.errors:
    st.metric("Unreadable files", len(report.errors))

st.subheader("Evidence, class by class", help=glossary.help_for("in-distribution band"))
evidence.draw_band_charts(report)
evidence.explain_one(report)

st.subheader("Per-image numbers")
grid = st.columns(2)
for i, fig in enumerate(figures.per_image_charts(report)):
    grid[i % 2].plotly_chart(fig)

evidence.evidence(report)
evidence.downloads(report, stem="dataset_check")
