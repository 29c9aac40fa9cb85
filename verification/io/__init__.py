"""Safe loading of models (safetensors, state dicts, torch.export; pickles only on opt-in) and images
(PNG, JPEG, TIFF 8/16-bit, DICOM), and the model input tensor built from them."""

from verification.io.architectures import build_architecture
from verification.io.images import load_image, to_tensor
from verification.io.models import check_forward, load_model, load_model_bytes, save_model
from verification.io.records import LoadedImage, LoadedModel

__all__ = [
    "LoadedImage",
    "LoadedModel",
    "build_architecture",
    "check_forward",
    "load_image",
    "load_model",
    "load_model_bytes",
    "save_model",
    "to_tensor",
]
