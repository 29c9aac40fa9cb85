"""Dataset check: a whole folder or zip verified against the reference, with progress, table and charts."""

from __future__ import annotations

import streamlit as st

from ui import figures, loaders, server_paths
from ui.sidebar import workspace
from ui.state import K
from ui.widgets import guard, report_downloads, report_verdict
from verification.errors import ImageLoadError

st.title("Dataset check", anchor=False)
st.caption(
    "Verify many images at once against the reference bundle. A zip (or a folder) with one subfolder per "
    "class — `normal/…`, `nodule/…` — also gives the accuracy; images are read chunk by chunk, so the "
    "dataset does not have to fit in memory."
)
ws = workspace(images=False, bundle=True)

K.DATASET_SOURCE.init()
# A folder on the *server*: offered only when the operator allows folders (ui/server_paths.py, off by default)
server_folders = server_paths.enabled()
if K.DATASET_SOURCE.get() == "folder" and not server_folders:
    K.DATASET_SOURCE.set("upload")
source = st.radio(
    "Dataset",
    ["upload", "folder", "current"] if server_folders else ["upload", "current"],
    format_func={
        "upload": "Upload a zip or images",
        "folder": "A folder on the server",
        "current": "The images in the sidebar",
    }.get,
    horizontal=True,
    key=K.DATASET_SOURCE.name,
)
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

if st.button("Run the check", type="primary", icon=":material/play_arrow:"):
    with guard("Dataset check"):
        if source == "upload":
            if not files:
                raise ImageLoadError("Upload a zip or some images first.")
            sources, skipped = loaders.sources_from_upload([(f.name, f.getvalue()) for f in files])
            label = ", ".join(f.name for f in files)
            if skipped:
                st.caption(f"Skipped {len(skipped)} non-image file(s).")
        elif source == "folder":
            sources, label = loaders.sources_from_folder(folder), folder
        else:
            if ws.images is None:
                raise ImageLoadError("No images are loaded in the sidebar.")
            sources, label = loaders.sources_from_items(ws.images), ws.images.label
        bar = st.progress(0.0, text=f"Verifying {len(sources)} images…")
        result = loaders.verify_sources(
            ws.model_a.model,
            ws.model_a.lock,
            ws.bundle.bundle,
            sources,
            label=label,
            progress=lambda done, total: bar.progress(
                done / total, text=f"{done} of {total} images verified"
            ),
        )
        bar.empty()
        K.DATASET_RESULT.set(result)

result = K.DATASET_RESULT.get()
if result is None:
    st.info("Choose a dataset and press **Run the check**.")
    st.stop()

report = result.report
report_verdict(report, f"Model {report.verdict} on {result.label}")
for message in result.errors:
    st.error(message, icon=":material/broken_image:")
for warning in report.warnings:
    st.warning(warning, icon=":material/warning:")

summary = report.summary()
cols = st.columns(4)
cols[0].metric("Images verified", summary["images"])
cols[1].metric("Flagged", f"{summary['flagged']} ({summary['flagged_share']:.0%})")
cols[2].metric("Unreadable files", len(result.errors))
if summary["accuracy"] is not None:
    cols[3].metric("Accuracy", f"{summary['accuracy']:.1%}")

st.subheader("Distributions")
charts = figures.distribution_charts(report, ws.bundle.bundle)
grid = st.columns(2)
for i, fig in enumerate(charts):
    grid[i % 2].plotly_chart(fig)

st.subheader("Per image")
st.dataframe(loaders.report_table(report), hide_index=True, width="stretch")
report_downloads(report, stem="dataset_check")
