"""FreeCure engine: pure torch modules (no ComfyUI import) plus one adapter subpackage, `comfy_bridge`.

Modules:
    fasa/       foundation-aware self-attention (FASA), one engine for SD UNet and FLUX models: attention math,
                token-grid masks, layers, record/replay of foundation-branch features, the settings object, and
                what is FLUX-specific (flux)
    runner/     the headless runner (``run_workflow``; ``python -m freecure_core.run``, the benchmark protocol)
    run         only the entry of ``python -m freecure_core.run`` (calls ``runner.cli.main``)
    onnx_session  opening ONNX models with onnxruntime (the face detector and recognizer)
"""
