"""The farm tests' fixtures: the `turbovsr` binary (TURBOVSR_BIN) and the small clip with its
in-process upscale (common.py)."""

import os

import pytest
from common import Media, make_media

# Ray reaches a cluster on 127.0.0.1 only in its single-machine mode: otherwise it turns a
# loopback address into this machine's IP, where a loopback cluster does not listen. Ray reads the
# variable when it is imported, so it is set here (conftest comes before the test modules, and
# nothing here imports ray); the drivers that the tests start inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def binary() -> str:
    """The `turbovsr` binary, or a skip of the test."""
    path = os.environ.get("TURBOVSR_BIN")
    if not path:
        pytest.skip("TURBOVSR_BIN is not set: farming needs the turbovsr binary")
    if not os.access(path, os.X_OK):
        pytest.skip(f"TURBOVSR_BIN={path} is not an executable file")
    return path


@pytest.fixture(scope="session")
def media(binary, tmp_path_factory) -> Media:
    return make_media(binary, tmp_path_factory.mktemp("media"), 64, 48)
