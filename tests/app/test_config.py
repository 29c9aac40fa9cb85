"""The server's upload cap and the backend's model limit agree: a model the backend loads can be uploaded."""

from __future__ import annotations

import tomllib
from pathlib import Path

from verification.io.budget import DEFAULT_MODEL_LIMITS, MiB

CONFIG = Path(__file__).resolve().parents[2] / ".streamlit" / "config.toml"


def test_upload_cap_admits_the_largest_model_file_the_backend_loads() -> None:
    server = tomllib.loads(CONFIG.read_text())["server"]
    cap_bytes = int(server["maxUploadSize"]) * MiB  # Streamlit counts the cap in MiB
    assert cap_bytes >= DEFAULT_MODEL_LIMITS.max_file_bytes
    # and no more than that: a larger upload would only be refused after it was held in memory
    assert cap_bytes <= DEFAULT_MODEL_LIMITS.max_file_bytes + MiB
