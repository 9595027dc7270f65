"""A page as a real browser draws it: Debian's Chromium, headless, offline, to a screenshot."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def screenshot(page: Path, scratch: Path, width: int, height: int) -> np.ndarray:
    """(height, width, 3) RGB pixels of `page` drawn in a window of that size."""
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is needed (make install puts it there)"
    picture = scratch / "screenshot.png"
    subprocess.run(
        [chromium, *FLAGS, f"--user-data-dir={scratch / 'profile'}", f"--window-size={width},{height}",
         f"--screenshot={picture}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(picture).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (height, width)
    return pixels
