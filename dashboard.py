"""The dashboard frame: page config, the shared sidebar, navigation over the pages.

Run with ``streamlit run dashboard.py``; it opens on the built-in demo (sound model, demo test images, demo
reference bundle), so the first page draws real heatmaps with nothing uploaded. Nothing the page loads comes
from another host (the favicon and fonts are served by the app itself). Reading folders on the server is off
unless the operator allows chosen folders: ``VERIFICATION_FOLDER_ROOTS=/data/a:/data/b``
(verification/server_paths.py).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import sidebar, warm

# The favicon is a local file served by this app: a ":material/...:" or emoji icon makes the browser fetch it
# from fonts.gstatic.com on every page load, which an offline tool must not do (tests/app/test_offline.py).
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"

st.set_page_config(
    page_title="Attention verification",
    page_icon=str(FAVICON),
    layout="wide",
    initial_sidebar_state="expanded",
)

PAGES = [
    st.Page("pages/attention.py", title="Attention", icon=":material/visibility:", default=True),
    st.Page("pages/similarity.py", title="Similarity", icon=":material/compare_arrows:"),
    st.Page("pages/features.py", title="Feature maps", icon=":material/grid_view:"),
    st.Page("pages/compare.py", title="Compare models", icon=":material/difference:"),
    st.Page("pages/consistency.py", title="Consistency", icon=":material/timeline:"),
    st.Page("pages/dataset.py", title="Dataset check", icon=":material/fact_check:"),
    st.Page("pages/export.py", title="Report & export", icon=":material/download:"),
    st.Page("pages/story.py", title="Guided story", icon=":material/auto_stories:"),
]

navigation = st.navigation(PAGES, position="top")
with warm.ACTIVITY.run():  # ui/serve.py's background warming waits while a reader's run is in progress
    finish_sidebar = sidebar.render(model_b_now=navigation.url_path == "compare")
    try:
        navigation.run()
    finally:  # also after a page's st.stop(): the sidebar is always complete
        finish_sidebar()
        warm.freeze_heap_once()  # later runs' garbage collections skip what the first run loaded
