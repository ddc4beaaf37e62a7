"""Where genba keeps files by default (torch-free, so `genba predict` on an ONNX file never imports torch)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """$GENBA_CACHE_DIR, else $XDG_CACHE_HOME/genba, else ~/.cache/genba."""
    if os.environ.get("GENBA_CACHE_DIR"):
        return Path(os.environ["GENBA_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "genba"
