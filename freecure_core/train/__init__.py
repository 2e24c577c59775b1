"""CrossFaceID cross-training of InstantID (arXiv 2501.15407): data preparation, fine-tuning, export, evaluation.

- ``records``: images + captions per identity, from folders or the CrossFaceID JSON/JSONL release;
- ``face_info``: insightface antelopev2 face info per image (embedding, box, 5 keypoints), cached and resumable;
- ``pairs``: cross pairs (ID input from one image, target from another of the same person) and the identity split;
- ``prepare``: ``python -m freecure_core.train.prepare``;
- ``model``: the trainable InstantID parts around a frozen diffusers SDXL UNet (Resampler, IP attention, ControlNet);
- ``data``: the training dataset (images, keypoint maps, embeddings, captions, condition dropout);
- ``fit``: ``python -m freecure_core.train.fit`` (accelerate: mixed precision, accumulation, multi-GPU/multi-node);
- ``export``: the adapter file the InstantID loaders read, and the diffusers ControlNet folder;
- ``eval``: ``python -m freecure_core.train.eval``, the benchmark protocol on held-out identities.
Training needs ``pip install -r requirements-train.txt`` (diffusers, accelerate); nothing here is imported by the
nodes.
"""
