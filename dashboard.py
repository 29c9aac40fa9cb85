"""The dashboard frame: page config, the shared sidebar, navigation over the pages.

Run with ``streamlit run dashboard.py``; it opens on the built-in demo (sound model, demo test images, demo
reference bundle), so the first page draws real heatmaps with nothing uploaded.
"""

from __future__ import annotations

import streamlit as st

from ui import sidebar

st.set_page_config(
    page_title="Attention verification",
    page_icon=":material/radiology:",
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
]

navigation = st.navigation(PAGES, position="top")
finish_sidebar = sidebar.render(model_b_now=navigation.url_path == "compare")
try:
    navigation.run()
finally:  # also after a page's st.stop(): the sidebar is always complete
    finish_sidebar()
