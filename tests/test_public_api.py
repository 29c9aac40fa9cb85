"""The package root re-exports a curated API lazily; every advertised name must resolve."""

import subprocess
import sys

import pytest

import verification


@pytest.mark.parametrize("name", verification.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(verification, name) is not None


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute"):
        verification.not_a_thing  # noqa: B018


def test_backend_never_imports_streamlit() -> None:
    """Import every backend module in a fresh interpreter: none may pull in streamlit."""
    code = (
        "import importlib, pkgutil, sys, verification\n"
        "for m in pkgutil.walk_packages(verification.__path__, 'verification.'):\n"
        "    if not m.name.endswith('__main__'): importlib.import_module(m.name)\n"
        "assert 'streamlit' not in sys.modules, 'a backend module imported streamlit'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
