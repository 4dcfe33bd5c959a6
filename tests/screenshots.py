"""Headless Chromium screenshots of report pages, and the check that a page is not blank or broken."""

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (.ci/bootstrap installs it: apt-get install -y chromium)",
)
# The flags that work on our machines: no sandbox as root, no GPU, and no background connections (the
# network is closed, and a report must not need it anyway).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",  # let a scripted page (Allure's) finish rendering before the shot
)
BROWSER_TIMEOUT_S = 180
MIN_COLOURS = 50
MIN_INK = 0.02  # share of pixels that are not the background


def screenshot(page: Path, folder: Path, size: str = "1280,3000") -> Image.Image:
    """The page as Chromium renders it, from a fresh profile."""
    png = folder / f"{page.stem}.png"
    command = [
        str(CHROMIUM),
        *FLAGS,
        f"--user-data-dir={folder / 'chromium-profile'}",
        f"--window-size={size}",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    subprocess.run(command, capture_output=True, timeout=BROWSER_TIMEOUT_S, check=True)
    return Image.open(png).convert("RGB")


def rendered(page: Path, folder: Path, size: str, deadline_s: float = BROWSER_TIMEOUT_S) -> Image.Image:
    """A scripted page (Allure's) once it shows content, shot again until the deadline: on a busy runner
    the first shot can come before its scripts drew anything. The last shot when it never does."""
    deadline = time.monotonic() + deadline_s
    while True:
        image = screenshot(page, folder, size)
        if blank_or_broken(image) is None or time.monotonic() > deadline:
            return image


def _colours(image: Image.Image) -> list[tuple[int, tuple[int, int, int]]]:
    return image.getcolors(maxcolors=image.width * image.height) or []


def blank_or_broken(image: Image.Image) -> str | None:
    """Why a screenshot looks like an empty or broken page, or None when it shows a page with content."""
    colours = _colours(image)
    count, _background = max(colours)
    ink = 1 - count / (image.width * image.height)
    if len(colours) < MIN_COLOURS:
        return f"only {len(colours)} colours"
    if ink < MIN_INK:
        return f"{ink:.1%} of the page differs from its background"
    return None


def has_colour(image: Image.Image, colour: str) -> bool:
    """Whether some pixel is exactly `colour` (#rrggbb)."""
    wanted = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return any(rgb == wanted for _, rgb in _colours(image))
