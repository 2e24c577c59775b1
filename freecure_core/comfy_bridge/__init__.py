"""The only part of freecure_core that imports ComfyUI: layer probe, attention patches, guiders, samplers."""
