"""Safe loading of models (safetensors, state dicts, torch.export; pickles only on opt-in) and images
(PNG, JPEG, TIFF 8/16-bit/float, DICOM), and the model input tensor built from them (:func:`as_input`: one
conversion of tensors, paths, bytes and loaded images for every entry point).

Untrusted input is bounded before it is decoded: :class:`Budget` / :class:`ResourceLimits` (image memory
per image and per upload, archives), :mod:`verification.io.sidecar` (the sidecar schema),
:mod:`verification.io.pt2` (what a torch.export archive would execute)."""

from verification.io.architectures import build_architecture
from verification.io.budget import Budget, ImageCost, ResourceLimits
from verification.io.images import (
    ImageInput,
    ImagesLike,
    as_image,
    as_input,
    image_cost,
    load_image,
    to_tensor,
)
from verification.io.models import check_forward, load_model, load_model_bytes, save_model
from verification.io.records import LoadedImage, LoadedModel

__all__ = [
    "Budget",
    "ImageCost",
    "ImageInput",
    "ImagesLike",
    "LoadedImage",
    "LoadedModel",
    "ResourceLimits",
    "as_image",
    "as_input",
    "build_architecture",
    "check_forward",
    "image_cost",
    "load_image",
    "load_model",
    "load_model_bytes",
    "save_model",
    "to_tensor",
]
