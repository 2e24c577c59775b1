"""FreeCure for ComfyUI: prompt-faithful face personalization (arXiv 2411.15277), training-free.

ComfyUI entry point only: V3 `comfy_entrypoint` when the V3 API exists, else V1 mappings.
ComfyUI ignores comfy_entrypoint when NODE_CLASS_MAPPINGS is defined, so exactly one is exported.
FreeCure's model folders (models/face_parsing, sams, instantid, insightface, ...) are registered with ComfyUI
here, once, when the pack loads; the node modules only declare nodes.
"""
from .freecure_core.comfy_bridge.model_paths import register_model_folders

register_model_folders()

try:
    from comfy_api.latest import ComfyExtension, io
except ImportError:  # ComfyUI older than the V3 node API
    ComfyExtension = io = None

if io is not None:
    from .nodes import v3_nodes

    class FreeCureExtension(ComfyExtension):
        async def get_node_list(self):
            return v3_nodes(io)

    async def comfy_entrypoint():
        return FreeCureExtension()
else:
    from .nodes import v1_mappings

    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = v1_mappings()
