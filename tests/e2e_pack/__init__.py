"""TEST-ONLY ComfyUI custom node pack (never shipped, never installed by users).

Loaded by the e2e server fixture (tests/conftest.py) as ``custom_nodes/zz_freecure_e2e``.
At import it registers the tiny SD1.5 model config at the front of
``comfy.supported_models.models`` so the *stock* CheckpointLoaderSimple can load
``tiny_sd15.safetensors`` (written by tests/e2e/make_ckpt.py), and the tiny SDXL config for
``tiny_sdxl.safetensors`` and its ControlNet (tests/e2e/make_identity_models.py).

It also defines one harmless node, ``FreeCureE2EMarker``: the fixture waits for it
in /object_info, which proves this pack imported and registered without error.
"""
import importlib
import importlib.util
import pathlib
import sys

_SUPPORT_DIR = pathlib.Path(__file__).resolve().parent.parent / "support"
_SUPPORT_NAME = "freecure_e2e_support"  # unique name; the server has no tests/ on sys.path


def _load_support():
    if _SUPPORT_NAME not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _SUPPORT_NAME, _SUPPORT_DIR / "__init__.py",
            submodule_search_locations=[str(_SUPPORT_DIR)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[_SUPPORT_NAME] = module
        spec.loader.exec_module(module)
    return importlib.import_module(_SUPPORT_NAME + ".tiny_models")


tiny_models = _load_support()
tiny_models.register_tiny_sd15()
tiny_models.register_tiny_sdxl()


class FreeCureE2EMarker:
    """Outputs a constant string; exists only so tests can see this pack loaded."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "testing/freecure_e2e"

    def run(self):
        return ("freecure-e2e-ok",)


NODE_CLASS_MAPPINGS = {"FreeCureE2EMarker": FreeCureE2EMarker}
NODE_DISPLAY_NAME_MAPPINGS = {"FreeCureE2EMarker": "FreeCure E2E marker (test only)"}
