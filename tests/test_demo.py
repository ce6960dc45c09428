"""The `segformer demo` command: segments a generated image with a random B0 and writes two PNGs."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segformer.demo import sample_image
from segformer.visualization import default_palette


@pytest.mark.slow
def test_demo_command_writes_mask_and_overlay(tmp_path):
    # The console script that `pip install` created next to this interpreter.
    command = Path(sys.executable).with_name("segformer")
    result = subprocess.run(
        [str(command), "demo", "--output-dir", str(tmp_path / "demo")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wrote" in result.stdout
    mask = Image.open(tmp_path / "demo" / "mask.png")
    overlay = Image.open(tmp_path / "demo" / "overlay.png")
    image = sample_image()
    assert mask.format == overlay.format == "PNG"
    assert mask.size == overlay.size == image.size
    # The mask is painted only with the palette of the 8 default classes ...
    colors = np.unique(np.asarray(mask.convert("RGB")).reshape(-1, 3), axis=0)
    palette = {tuple(color) for color in default_palette(8)}
    assert {tuple(color) for color in colors} <= palette
    # ... and the overlay is the half-and-half blend of image and mask.
    blend = Image.blend(image, mask.convert("RGB"), 0.5)
    assert np.abs(np.asarray(overlay, dtype=int) - np.asarray(blend, dtype=int)).max() <= 1
