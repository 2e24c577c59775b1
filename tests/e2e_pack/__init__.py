"""TEST-ONLY ComfyUI custom node pack (never shipped, never installed by users).

Loaded by the e2e server fixture (tests/conftest.py) as ``custom_nodes/zz_freecure_e2e``.
At import it registers the tiny SD1.5 model config at the front of
``comfy.supported_models.models`` so the *stock* CheckpointLoaderSimple can load
``tiny_sd15.safetensors`` (written by tests/e2e/make_ckpt.py), and the tiny SDXL config for
``tiny_sdxl.safetensors`` and its ControlNet (tests/e2e/make_identity_models.py), and TinySDXL2048 (the tiny SDXL
UNet layout with SDXL's 2048-wide context and SDXL's real tokenizers + SDXLClipModel, towers shrunk to 3 layers) for
``tiny_sdxl_2048.safetensors``.

Test-only size reduction of ComfyUI's own PhotoMaker class: ComfyUI's PhotoMakerLoader always builds
``PhotoMakerIDEncoder``, whose vision tower is the full CLIP ViT-L/14 from the module constant
``comfy_extras.nodes_photomaker.VISION_CONFIG_DICT`` (~300 M parameters). This pack replaces that constant with a
copy shrunk to a 1-layer tower with a narrow MLP (tests/support/tiny_photomaker.py ``TINY_VISION_TOWER``); hidden
size, image and patch size stay, so the real projections (1024 -> 768, 1024 -> 1280) and FuseModule(2048) are built
unchanged and the stock loader reads ``models/photomaker/tiny_photomaker.bin`` (make_identity_models.py). Like the
tiny model configs, this only makes the test models loadable; no node's code is replaced. The encoder reads the
constant when it is constructed, so every loaded copy of the module is patched: now (ComfyUI loads comfy_extras
before custom nodes, under the file's path as module name) and again before each queued prompt, for a copy
imported after this pack.

With $FREECURE_E2E_FACEXLIB_ROOT set (the peer-pack server only), it points facexlib's weight folder there
(``point_facexlib_at_test_weights``): PuLID_ComfyUI gives facexlib no folder of its own.

It also defines one harmless node, ``FreeCureE2EMarker``: the fixture waits for it
in /object_info, which proves this pack imported and registered without error.
"""
import importlib
import importlib.util
import os
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
tiny_models.register_tiny_sdxl_2048()
tiny_photomaker = importlib.import_module(_SUPPORT_NAME + ".tiny_photomaker")

_SHRUNK = "_freecure_e2e_tiny_vision_tower"  # marks a patched nodes_photomaker module


def _photomaker_modules():
    """Every loaded copy of comfy_extras/nodes_photomaker.py (ComfyUI names its copy by the file's path;
    ``import comfy_extras.nodes_photomaker`` makes another)."""
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if (os.path.basename(path) == "nodes_photomaker.py"
                and os.path.basename(os.path.dirname(path)) == "comfy_extras"
                and hasattr(module, "PhotoMakerIDEncoder")
                and isinstance(getattr(module, "VISION_CONFIG_DICT", None), dict)):
            yield module


def shrink_photomaker_vision_tower() -> int:
    """Set VISION_CONFIG_DICT of every loaded, not yet patched nodes_photomaker copy to the tiny tower; returns how
    many were patched now (idempotent)."""
    patched = 0
    for module in _photomaker_modules():
        if not getattr(module, _SHRUNK, False):
            module.VISION_CONFIG_DICT = tiny_photomaker.tiny_vision_config(module.VISION_CONFIG_DICT)
            setattr(module, _SHRUNK, True)
            patched += 1
    return patched


def _on_prompt(json_data):
    shrink_photomaker_vision_tower()
    return json_data


def allow_tiny_flux_files() -> None:
    """Test-only: ComfyUI 0.3.75 detects every FLUX file with 24 heads (FLUX.1's 3072 / 128), so the tiny FLUX file
    (hidden 128, one 128-wide head, tests/support/tiny_flux.py) would not build. For FLUX files narrower than 3072 the
    head count is set to hidden / 128 (the head width every FLUX has); real FLUX files are untouched."""
    import comfy.model_detection as md
    if getattr(md.detect_unet_config, "_freecure_tiny_flux", False):
        return
    original = md.detect_unet_config

    def detect_unet_config(state_dict, key_prefix, metadata=None):
        cfg = original(state_dict, key_prefix, metadata=metadata)
        if cfg and cfg.get("image_model") == "flux" and cfg.get("hidden_size", 3072) < 3072:
            cfg["num_heads"] = cfg["hidden_size"] // 128
        return cfg
    detect_unet_config._freecure_tiny_flux = True
    md.detect_unet_config = detect_unet_config


FACEXLIB_ROOT_ENV = "FREECURE_E2E_FACEXLIB_ROOT"


def point_facexlib_at_test_weights() -> str | None:
    """Test-only, for the peer-pack server (tests/conftest.py ``comfy_peer_server``): facexlib (used by PuLID_ComfyUI)
    looks for its weights in ``<ROOT_DIR>/facexlib/weights/`` and downloads what is missing; ROOT_DIR is the
    installed package's parent (site-packages), and PuLID passes no ``model_rootpath``. With $FREECURE_E2E_FACEXLIB_ROOT
    set, ROOT_DIR (read by ``load_file_from_url`` at each call) becomes that folder, where the fixture wrote random
    weights (tests/support/peer_models.py), so nothing is written into the shared environment or downloaded. Unset,
    nothing changes. Returns the folder used, if any."""
    root = os.environ.get(FACEXLIB_ROOT_ENV)
    if not root:
        return None
    import facexlib.utils.misc
    facexlib.utils.misc.ROOT_DIR = root
    return root


allow_tiny_flux_files()
shrink_photomaker_vision_tower()
point_facexlib_at_test_weights()
try:  # the HTTP server; the headless runner's stand-in has no prompt handlers (it loads comfy_extras first too)
    from server import PromptServer
    _add_handler = getattr(getattr(PromptServer, "instance", None), "add_on_prompt_handler", None)
except ImportError:
    _add_handler = None
if _add_handler is not None:
    _add_handler(_on_prompt)


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


class FreeCureE2ETinyFluxConditioning:
    """CONDITIONING for the tiny FLUX model (8 x 32 context, 32-wide pooled vector, guidance) from a seed: the tiny
    model has no text encoder (a FLUX one would be CLIP-L + T5-XXL)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 1, "min": 0, "max": 2 ** 31}),
                             "guidance": ("FLOAT", {"default": 3.5, "min": 0.0, "max": 100.0})}}

    RETURN_TYPES = ("CONDITIONING",)
    FUNCTION = "run"
    CATEGORY = "testing/freecure_e2e"

    def run(self, seed, guidance):
        tiny_flux = importlib.import_module(_SUPPORT_NAME + ".tiny_flux")
        return (tiny_flux.flux_conditioning(seed, guidance=guidance),)


NODE_CLASS_MAPPINGS = {"FreeCureE2EMarker": FreeCureE2EMarker,
                       "FreeCureE2ETinyFluxConditioning": FreeCureE2ETinyFluxConditioning}
NODE_DISPLAY_NAME_MAPPINGS = {"FreeCureE2EMarker": "FreeCure E2E marker (test only)",
                              "FreeCureE2ETinyFluxConditioning": "FreeCure E2E tiny FLUX conditioning (test only)"}
