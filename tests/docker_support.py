"""What the container-based integration tests share: the docker CLI, and the check that the engine runs and the
project's base image is there (scripts/test.sh starts the one and builds the other)."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def docker(*args, check=True, **kwargs):
    """Run the docker CLI; its output is captured as text."""
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, **kwargs)


def require_engine_and_image(image):
    """Fail the test, saying what is missing, unless the Docker engine answers and the image exists."""
    if shutil.which("docker") is None or docker("info", check=False).returncode != 0:
        pytest.fail("this test needs the Docker engine (scripts/test.sh starts it)")
    if docker("image", "inspect", image, check=False).returncode != 0:
        pytest.fail("image %s is missing (scripts/test.sh builds it)" % image)
