"""FreeCure node declarations. `SPECS` lists every node; `spec.to_v3` / `spec.to_v1` build the classes."""
from .apg import SPECS as APG_SPECS
from .identity import SPECS as IDENTITY_SPECS
from .instantid import SPECS as INSTANTID_SPECS
from .metrics import SPECS as METRICS_SPECS
from .parsing import SPECS as PARSING_SPECS
from .photomaker import SPECS as PHOTOMAKER_SPECS
from .sampling import SPECS as SAMPLING_SPECS

SPECS = (list(SAMPLING_SPECS) + list(APG_SPECS) + list(PARSING_SPECS) + list(IDENTITY_SPECS)
         + list(INSTANTID_SPECS) + list(PHOTOMAKER_SPECS) + list(METRICS_SPECS))


def v3_nodes(io) -> list[type]:
    """The V3 node classes (io = comfy_api.latest.io)."""
    from .spec import to_v3
    return [to_v3(s, io) for s in SPECS]


def v1_mappings() -> tuple[dict, dict]:
    """NODE_CLASS_MAPPINGS and NODE_DISPLAY_NAME_MAPPINGS for ComfyUI without the V3 API."""
    from .spec import to_v1
    return {s.node_id: to_v1(s) for s in SPECS}, {s.node_id: s.display_name for s in SPECS}
