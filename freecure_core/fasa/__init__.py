"""Foundation-aware self-attention (FASA) as one engine, pure torch (no ComfyUI import), for two model families:
SD UNets (SD1.x, SD2.x, SDXL: attn1 self-attention sites) and FLUX (joint text-image attention blocks).

Modules:
    attention   the FASA math and its one kernel (``attend``), used by both families
    masks       attribute masks resampled to attention token grids
    layers      SD UNet layer sites, presets and custom layer lists; per-family omega defaults
    record      record/replay of foundation-branch features: the shared base ``FasaRecord``, ``ReplayMismatch``,
                and the SD UNet record ``KVStore``
    config      the FASA settings object that flows between nodes (both families)
    flux        only what is FLUX-specific: the joint-attention row layout (FASA on image rows), block presets,
                the image-token grid and ``FluxRecord``
"""
