"""Test-only helpers: locate/import ComfyUI (comfy_env) and tiny random models (tiny_models)."""
