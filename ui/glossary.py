"""One glossary for the whole dashboard: every metric and term a page shows, in plain words, for ``help=``
tooltips (hover the ⓘ beside a widget, metric or heading). Pages call :func:`help_for` with the term they show
(a term missing here is a KeyError, so a tooltip cannot silently go blank) or :func:`metric_help` with a
metric's registry name; :func:`layer_help` explains a layer name such as ``features.12.2 (144×7×7)``.
"""

from __future__ import annotations

import re

GLOSSARY: dict[str, str] = {
    "SUITABLE": (
        "Every evidence line that could decide passed, on enough assessable images per class (20 by "
        "default). The model decides from the findings on this dataset, as far as these lines can "
        "tell."
    ),
    "UNSUITABLE": (
        "A deciding evidence line failed: its number lies clearly on the wrong side of the threshold "
        "set from healthy models. The line that decided is named."
    ),
    "CANNOT VERIFY": (
        "Not a failure: the run lacks what a verdict needs — labels, finding annotations, enough "
        "assessable images per class, or a reference bundle whose classes match the model. What is "
        "missing is listed."
    ),
    "not assessable": (
        "An image the input gate (E0) removed — not a chest film like the reference set, or rejected "
        "by a garbage class. It is left out of every line and never counted as passing."
    ),
    "uninformative": (
        "Calibration showed this line cannot tell healthy models from known-bad ones (separation "
        "AUROC below 0.8, or a threshold that cannot fail), so it is reported but does not vote."
    ),
    "inconclusive": ("The 95 % interval straddles the threshold: not enough images to say pass or fail."),
    "threshold": (
        "The edge a class's number must stay on the right side of. It comes from healthy variation: "
        "the worst healthy model's class mean, moved a tolerance towards 'worse'."
    ),
    "healthy edge": (
        "The worst class mean among the healthy models used for calibration (or a bootstrap "
        "percentile with one trusted model). Healthy models lie on the passing side of it."
    ),
    "in-distribution band": (
        "The range of values the healthy (in-distribution) models or reference images produce: the "
        "shaded passing side of a band chart. A value outside it is what a failing line looks like."
    ),
    "separation (AUROC)": (
        "How well this line's threshold tells healthy models from known-bad ones (the randomised "
        "model, shortcut models) on the calibration images: 1 = perfectly, 0.5 = not at all."
    ),
    "Wilson interval": (
        "A 95 % confidence interval for a proportion (accuracy, sensitivity) that stays sensible for "
        "small counts and rates near 0 or 1."
    ),
    "accuracy": (
        "Share of labelled, assessable images whose predicted class is the label, with its Wilson 95 "
        "% interval. It stands beside the verdict: a model can be accurate for the wrong reason."
    ),
    "E0": (
        "E0 input validity: is each image like the reference set? Early feature-map shift, image "
        "statistics and a garbage class (when the model has one). Failing images are not assessable."
    ),
    "E1": (
        "E1 task performance: per class, sensitivity and specificity; Youden's J (= sens + spec − 1) "
        "must clear chance by a margin with 95 % confidence. A model at chance is never suitable."
    ),
    "E2": (
        "E2 localisation: attention energy inside the annotated finding, against trivial maps "
        "(uniform; the run's mean map). Fails when the maps point at the finding no better than "
        "those."
    ),
    "E3": (
        "E3 reliance outside the anatomy: remove everything outside the lungs (and, separately, the "
        "lungs themselves) and see whether the prediction moves. A model that needs the outside "
        "relies on a shortcut."
    ),
    "E4": (
        "E4 finding counterfactual: remove the annotated finding (the same case without its lesion). "
        "A sound model's confidence in the finding's class falls; one that survives did not use the "
        "finding."
    ),
    "E5": (
        "E5 agreement with reference maps: the seven metrics between each map and its class's "
        "reference map (mean map of a trusted model). Supporting evidence: votes only where "
        "calibration shows it separates."
    ),
    "E6": (
        "E6 faithfulness: deletion and insertion curves of the map against a random pixel order; a "
        "map that ranks pixels no better than random explains nothing."
    ),
    "IoU": (
        "Intersection over union of the two maps after thresholding: 1 = the same region, 0 = no overlap."
    ),
    "Dice": (
        "Dice coefficient of the thresholded maps, 2·|A∩B| / (|A|+|B|): like IoU but kinder to "
        "partial overlap. 1 = identical regions."
    ),
    "SSIM": (
        "Structural similarity: compares local brightness, contrast and structure of the two maps; 1 "
        "= identical, 0 = unrelated."
    ),
    "cosine": ("Cosine similarity of the two maps as vectors: 1 = the same pattern up to scale."),
    "Pearson": (
        "Pearson correlation of the two maps' pixel values: 1 = they rise and fall together, 0 = "
        "unrelated, negative = opposite."
    ),
    "KL(ref‖map)": (
        "Kullback–Leibler divergence from the reference map to this map, both as distributions of "
        "attention: 0 = identical; larger = attention the reference expects is missing. Lower is "
        "better."
    ),
    "Wasserstein (spatial)": (
        "Earth mover's distance between the two maps as masses on the image, in image widths: how far"
        " attention must move to match the reference. 0 = identical; lower is better."
    ),
    "Wasserstein (1-D values)": (
        "Earth mover's distance between the two maps' value histograms (ignores where): lower is better."
    ),
    "C-Score": (
        "Attention consistency of a class across patients: the confidence-weighted mean soft IoU of "
        "the maps of the images the model classifies correctly and confidently (1 = the same region "
        "every time)."
    ),
    "τ": ("Gold-list confidence τ: only images classified correctly with probability ≥ τ enter the C-Score."),
    "γ": (
        "Intensity emphasis γ: maps are raised to the power γ before comparing, so the hottest "
        "regions count most (1 = raw maps)."
    ),
    "early warning": (
        "A C-Score that falls more than the set drop below its best while the AUC holds — the pattern"
        " of a model drifting toward a shortcut. A dip that recovers at a later checkpoint is shown "
        "as a recovered dip, not as drift."
    ),
    "AUC": (
        "Area under the ROC curve (macro one-vs-rest): how well the scores rank each class above the "
        "others; 1 = perfectly, 0.5 = chance."
    ),
    "layer": (
        "Where the attention map is read: the module's path in the network (e.g. features.12.2 = "
        "block 12 of 'features', sub-layer 2) and its output size (channels × height × width). Later "
        "layers see larger regions on a coarser grid."
    ),
    "reference map": (
        "The mean normalised attention map of a trusted model over its correctly classified reference"
        " images of a class: what healthy attention for that class looks like."
    ),
    "reference bundle": (
        "A trusted model's per-class reference maps, the settings they were made with (method, layer,"
        " grid) and the verdict's calibration (thresholds from healthy models, checked on known-bad "
        "ones)."
    ),
    "HTML report": (
        "One file with the verdict, every line's numbers and band charts, example images and the "
        "provenance; pictures embedded, no script, opens offline. Made when you click, and says when."
    ),
    "PDF report": (
        "A few A4 pages to file: the verdict, the evidence lines with their numbers and band charts, "
        "example images with a plain sentence each, and the provenance. Made when you click, and says"
        " when."
    ),
}

METRIC_TERMS: dict[str, str] = {
    "iou": "IoU",
    "dice": "Dice",
    "ssim": "SSIM",
    "cosine": "cosine",
    "pearson": "Pearson",
    "kl": "KL(ref‖map)",
    "wasserstein": "Wasserstein (spatial)",
    "wasserstein_values": "Wasserstein (1-D values)",
}
"""The metric registry's names (``verification.metrics.METRICS``) → their glossary term."""

_LAYER = re.compile(r"^(?P<name>[\w.\-]+)\s*\((?P<c>\d+)×(?P<h>\d+)×(?P<w>\d+)\)$")


def help_for(term: str) -> str:
    """The glossary's words for ``term`` (KeyError for a term it does not know)."""
    return GLOSSARY[term]


def metric_help(name: str) -> str:
    """The glossary's words for a metric by its registry name (``"kl"``) or its registry label
    (``"KL(ref‖map)"``, ``"Pearson r"``)."""
    from verification.metrics import METRICS

    by_label = {spec.label: key for key, spec in METRICS.items()}
    return GLOSSARY[METRIC_TERMS.get(by_label.get(name, name), name)]


def line_help(key: str) -> str:
    """The words for an evidence line by its key (``"E3"``)."""
    return GLOSSARY[key]


def layer_help(label: str) -> str:
    """A layer label such as ``features.12.2 (144×7×7)`` in words, then what a layer is."""
    m = _LAYER.match(label.strip())
    if m is None:
        return GLOSSARY["layer"]
    c, h, w = m.group("c"), m.group("h"), m.group("w")
    return (
        f"{m.group('name')}: {c} channels on a {h}×{w} grid — each map pixel covers about "
        f"1/{w} of the image's width. " + GLOSSARY["layer"]
    )


def verdict_help(label: str) -> str:
    """The words for a verdict label (``SUITABLE``, ``UNSUITABLE``, ``CANNOT VERIFY``)."""
    return GLOSSARY[label]
