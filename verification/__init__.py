"""Verification of medical-imaging CNNs through their attention maps. The backend: no UI imports."""
