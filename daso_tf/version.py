"""The daso_tf version: the single source of truth (pyproject.toml reads it from here)."""

__version__ = "0.3.0"
