"""Evaluation: the measurements the FreeCure and CrossFaceID papers report, as a library.

- ``identity``: identity fidelity (IF), ArcFace cosine between generated faces and the reference.
- ``clip_score``: prompt consistency (PC, CLIP-T) and CLIP zero-shot probabilities, from a local CLIP folder.
- ``attribute_accuracy``: whether the image shows the attributes the prompt asked for (parsed regions, CLIP).
- ``face_diversity``: LPIPS distance between face crops (Face Div.).
- ``prompts``, ``identities``, ``table``, ``plots``, ``protocol``: the benchmark protocol
  (``python -m freecure_core.eval.protocol``).

Every model comes from a local file or folder; nothing here downloads. No ComfyUI imports.
"""
