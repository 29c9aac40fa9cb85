"""Consistency: the C-Score per class and method across training checkpoints — the demo's series or your
own (several files or one zip, read with the safe loaders and archive limits) on a labelled set — with the
AUC beside it."""

from __future__ import annotations

import streamlit as st

from ui import checkpoints, figures, glossary, loaders
from ui.sidebar import MODEL_TYPES, trust_checkbox, workspace
from ui.state import K
from ui.widgets import choice, guard
from verification.interactive import METHOD_LABELS, ONE_PASS_METHODS

st.title("Consistency across patients and checkpoints", anchor=False)
st.caption(
    "The C-Score asks whether a model looks at the same kind of place in every confidently and correctly "
    "classified patient of a class: the confidence-weighted mean soft IoU of their attention maps (1 = the "
    "same region every time). Tracked over training checkpoints, a C-Score that falls and stays down while "
    "the AUC holds is an early warning that the model is drifting toward a shortcut; a dip that recovers at "
    "a later checkpoint is shown as such, not as drift."
)
ws = workspace(images=False)  # the demo test set stands in for unlabelled images

for key in (
    K.CONSISTENCY_METHODS,
    K.CONSISTENCY_TAU,
    K.CONSISTENCY_GAMMA,
    K.CONSISTENCY_ARCH,
    K.CONSISTENCY_TRUST,
):
    key.init()
src_col, eval_col = st.columns(2)
with src_col:
    source = choice(
        K.CONSISTENCY_SOURCE,
        "Checkpoints",
        {"demo": "The demo's training run (10 checkpoints)", "upload": "Upload my own series"},
    )
    uploads = None
    if source == "upload":
        uploads = st.file_uploader(
            "Checkpoint files of one training run — several at once, or one zip (a JSON sidecar of the same "
            "name gives classes and input size)",
            type=[*MODEL_TYPES, "json", "zip"],
            accept_multiple_files=True,
            key=K.CONSISTENCY_UPLOAD.name,
        )
        arch = st.text_input(
            "Architecture (for bare state dicts), e.g. resnet18",
            key=K.CONSISTENCY_ARCH.name,
            placeholder="from the sidecar",
        )
        trust = trust_checkbox(K.CONSISTENCY_TRUST, K.CONSISTENCY_TRUSTED_FILES, uploads or [])
with eval_col:
    evaluation = choice(
        K.CONSISTENCY_EVAL,
        "Labelled evaluation set",
        {
            "sidebar": "The sidebar's images if labelled (else the demo test set)",
            "upload": "Upload a labelled zip (one folder per class)",
        },
    )
    eval_files = None
    if evaluation == "upload":
        eval_files = st.file_uploader(
            "Labelled zip", type=["zip"], accept_multiple_files=True, key=K.CONSISTENCY_EVAL_UPLOAD.name
        )

c1, c2, c3 = st.columns([3, 1, 1])
methods = c1.multiselect(
    "Methods",
    ONE_PASS_METHODS,
    format_func=lambda m: METHOD_LABELS.get(m, m),
    key=K.CONSISTENCY_METHODS.name,
    help="All of them come from the same forward and backward pass per checkpoint.",
)
tau = c2.slider(
    "Gold-list confidence τ", 0.5, 0.99, step=0.01, key=K.CONSISTENCY_TAU.name, help=glossary.help_for("τ")
)
gamma = c3.slider(
    "Intensity emphasis γ", 1.0, 4.0, step=0.5, key=K.CONSISTENCY_GAMMA.name, help=glossary.help_for("γ")
)
if not methods:
    st.info("Choose at least one method.")
    st.stop()
if source == "upload" and not uploads:
    st.info(
        "Upload at least two checkpoint files of one training run, or one zip of them.",
        icon=":material/upload:",
    )
    st.stop()
if evaluation == "upload" and not eval_files:
    st.info(
        "Upload a labelled zip (one folder per class) to evaluate the checkpoints on.",
        icon=":material/upload:",
    )
    st.stop()

series = None
with guard("Tracking the checkpoints"):
    if eval_files:
        images = checkpoints.labelled_uploads(eval_files)
    else:
        images = loaders.labelled_or_demo(ws.images)
    if uploads:
        found = checkpoints.pair_uploads(uploads, architecture=arch.strip() or None, trust=trust)
        st.caption(
            "Training order (natural name order): "
            + " → ".join(c.name + (f" (+{c.sidecar})" if c.sidecar else "") for c in found)
        )
        with st.spinner(f"Computing maps for {len(found)} checkpoints × {len(images.items)} images…"):
            series = checkpoints.series(found, images, methods, tau, gamma)  # loads one at a time
    else:
        class_names = loaders.checkpoint_class_names()
        n_ckpt = len(loaders.demo_checkpoint_paths())
        with st.spinner(f"Computing maps for {n_ckpt} checkpoints × {len(images.items)} images…"):
            series = loaders.demo_checkpoint_series(images, class_names, methods, tau, gamma)
if series is None:
    st.stop()

st.caption(f"Evaluation set: {images.label} · {series.checkpoints[0].n_images} labelled images.")
for warning in series.drifting:
    st.warning(
        f"{warning.message()} — and it has not come back: drifting toward a shortcut?",
        icon=":material/trending_down:",
    )
for warning in series.recovered:
    st.info(f"A dip that recovered, not drift: {warning.message()}", icon=":material/trending_flat:")
if not series.drifting:
    st.success(
        "No early warning: no C-Score fell by more than its threshold and stayed down while the AUC held"
        + (f" ({len(series.recovered)} dip(s) recovered)." if series.recovered else "."),
        icon=":material/check_circle:",
    )

if K.CONSISTENCY_SHOWN.get() not in methods:
    K.CONSISTENCY_SHOWN.set(methods[0])
shown = (
    st.segmented_control(
        "Method",
        methods,
        format_func=lambda m: METHOD_LABELS.get(m, m),
        key=K.CONSISTENCY_SHOWN.name,
        help=glossary.help_for("C-Score") + " " + glossary.help_for("early warning"),
    )
    or methods[0]
)
collapsed = [r for r in series.rows if r.method == shown and r.status == "collapsed"]
if collapsed:
    st.caption(
        "Gaps in the C-Score lines are collapsed gold lists (fewer than two images of the class predicted "
        "correctly with confidence ≥ τ), reported as undefined rather than 0: "
        + ", ".join(f"{r.class_name} at {r.checkpoint} (|G| = {r.n_gold})" for r in collapsed[:12])
        + (" …" if len(collapsed) > 12 else "")
    )
left, right = st.columns(2)
c_fig, auc_fig = figures.checkpoint_charts(series, shown)
left.plotly_chart(c_fig)
right.plotly_chart(auc_fig)

with st.expander("Checkpoint table (C-Score per method/class, |G| gold-list sizes)", expanded=False):
    table = series.table()
    st.dataframe(table, hide_index=True, width="stretch")
    st.download_button(
        "Download CSV",
        table.to_csv(index=False),
        file_name="checkpoints.csv",
        mime="text/csv",
        on_click="ignore",
    )
    st.download_button(
        "Download JSON",
        series.to_json(),
        file_name="checkpoints.json",
        mime="application/json",
        on_click="ignore",
    )
