"""The version of this implementation and of its wire API."""

from __future__ import annotations

__version__ = "0.1.0"
