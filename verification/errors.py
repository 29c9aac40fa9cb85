"""Typed errors raised at the backend's boundary.

Every message is written for the person who supplied the input: it says what is wrong and what to do.
The UI and the CLI decide how to show them; the backend never swallows them.
"""

from __future__ import annotations


class VerificationError(Exception):
    """Base class for every error the backend raises on purpose."""


class InputTooLargeError(VerificationError):
    """A file or image exceeds a configured size or pixel limit."""


class UploadTooLargeError(InputTooLargeError):
    """The files of one upload or batch, together, exceed a budget (decoded bytes, archive bytes or entries);
    each file alone may be fine."""


class ImageLoadError(VerificationError):
    """An image file could not be read or is unusable (corrupt, truncated, not an image, too small)."""


class ModelLoadError(VerificationError):
    """A model file could not be loaded (wrong format, weights that do not fit, unknown architecture)."""


class UntrustedFileError(ModelLoadError):
    """Loading the file would execute code from it (pickle) and the caller has not opted in to trust it."""


class TorchScriptError(ModelLoadError):
    """TorchScript modules cannot carry hooks; the user must re-save the model in another format."""


class ShapeError(VerificationError):
    """A tensor, image or map has a shape the operation cannot accept (wrong channels, sizes, batch)."""


class ModelForwardError(VerificationError):
    """The model raised while running on the given input."""


class LayerError(VerificationError):
    """A target layer name does not exist in the model or does not produce a spatial (N, C, H, W) output."""


class BundleError(VerificationError):
    """A reference bundle or saved result is missing, corrupt, or of an unsupported schema version."""


class CancelledError(VerificationError):
    """A long computation was cancelled through its progress callback."""


class InvalidInputError(VerificationError, ValueError, TypeError):
    """An argument the operation cannot accept: text where numbers are needed, a value out of its range (a
    threshold outside [0, 1], a size of 0), NaN. Also a ValueError and a TypeError, which callers catching
    the built-in kinds for these mistakes still catch."""


class NonFiniteError(VerificationError):
    """NaN or infinite values where finite numbers are needed: an input tensor, a model's output, the
    activations or gradients at a layer, a map."""


class PacsError(VerificationError):
    """A PACS (DICOMweb server) could not be used: a bad address, a refused request, an answer that is not
    DICOM. Messages name the server (scheme, host, port, path) but never a password or token."""


class PacsUnavailableError(PacsError):
    """The PACS cannot be reached, refused the connection, did not answer in time, or kept failing (5xx)."""


class PacsAuthError(PacsError):
    """The PACS refused the credentials (HTTP 401/403), or none were configured."""


class PacsNotFoundError(PacsError):
    """The study, series or instance asked for is not on the PACS (HTTP 404 or an empty answer)."""


class MissingFieldError(ModelLoadError):
    """A model cannot be built because one piece of information is missing or does not fit the weights.

    ``field`` names it in the sidecar's vocabulary ("architecture", "class_names", ...); ``str(exc)`` is
    worded for the command line and the Python API. A user interface maps ``field`` to its own control (the
    dashboard: "the **Architecture** field below") instead of repeating advice meant for another surface."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field
