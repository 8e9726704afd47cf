"""Where the headless browser of the rendering tests is (they skip without one)."""

from __future__ import annotations

import shutil


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary on PATH, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None
