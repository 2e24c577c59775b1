"""FreeCure engine: pure torch modules (no ComfyUI import) plus one adapter subpackage, `comfy_bridge`.

Modules:
    attention   foundation-aware self-attention (FASA) math
    masks       attribute masks resampled to attention token grids
    layers      layer sites, presets and custom layer lists
    kv_store    record/replay store of foundation-branch keys/values
    config      the FASA settings object that flows between nodes
    runner/     the headless runner (``run_workflow``; ``python -m freecure_core.run``, the benchmark protocol)
    run         only the entry of ``python -m freecure_core.run`` (calls ``runner.cli.main``)
    onnx_session  opening ONNX models with onnxruntime (the face detector and recognizer)
"""
