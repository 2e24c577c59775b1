"""In-process ComfyUI fixtures for the adapter tests: tiny SD1.5- and SDXL-shaped models."""
import pytest

from support.comfy_env import import_comfy

import_comfy()

from support import tiny_models  # noqa: E402
from support.cases import Case  # noqa: E402,F401  (the tests import it from here)


@pytest.fixture(scope="session")
def sd15():
    return tiny_models.build_tiny_sd15(0)


@pytest.fixture(scope="session")
def sdxl():
    return tiny_models.build_tiny_sdxl(0)


@pytest.fixture(scope="session")
def sd15_case(sd15):
    return Case(sd15, "sd1", 16, 24)


@pytest.fixture(scope="session")
def sdxl_case(sdxl):
    return Case(sdxl, "sdxl", 16, 24)
