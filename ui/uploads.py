"""The model upload form's words: a :class:`~verification.errors.MissingFieldError` said at the form's own
field. The upload rules themselves (zip limits, bundle and checkpoint files, the form's sidecar) are the
backend's :mod:`verification.uploads`."""

from __future__ import annotations

from verification.errors import MissingFieldError
from verification.uploads import form_sidecar, parse_names

# form_sidecar and parse_names are the backend's; tests that drive the form import them from here.
__all__ = ["FIELD_LABELS", "form_message", "form_sidecar", "parse_names"]

FIELD_LABELS: dict[str, str] = {
    "architecture": "Architecture",
    "class_names": "Label names",
    "num_classes": "Label names",
    "task": "Task",
}
"""The dashboard's model-form field that answers a :class:`~verification.errors.MissingFieldError`, by the
error's ``field`` (the sidecar's vocabulary)."""


def form_message(exc: MissingFieldError, filename: str, *, outputs: int | None = None) -> str:
    """What the upload form says for a model that misses ``exc.field``: the form's own field, by its label,
    instead of the command-line advice in ``str(exc)``."""
    name = filename[:120]
    if exc.field == "architecture":
        return (
            f"'{name}' holds weights only: choose its architecture in the **Architecture** field below "
            "(e.g. resnet18), or upload a sidecar JSON that names it."
        )
    if exc.field in ("class_names", "num_classes"):
        count = f" ({outputs})" if outputs is not None else ""
        return (
            f"The names do not match the model's outputs: {exc}. Give one name per output{count} in the "
            "**Label names** box below, one per line, or leave it empty to use the sidecar's."
        )
    label = FIELD_LABELS.get(exc.field)
    return f"{exc} — set it in the **{label}** field below." if label else str(exc)
