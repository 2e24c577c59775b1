"""In-process tests that point ComfyUI's model folders at a temporary models/ tree, and put them back after."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def models_dir(models_root, folder_names):
    """folder_paths.models_dir = `models_root` with the named folders forgotten (so FreeCure registers them there
    again); the previous folder configuration and file-list cache are restored on exit."""
    import folder_paths
    saved = {k: (list(v[0]), set(v[1]) if isinstance(v[1], set) else v[1])
             for k, v in folder_paths.folder_names_and_paths.items()}
    old = folder_paths.models_dir
    folder_paths.models_dir = str(models_root)
    for name in folder_names:
        folder_paths.folder_names_and_paths.pop(name, None)
    folder_paths.filename_list_cache.clear()
    try:
        yield
    finally:
        folder_paths.models_dir = old
        folder_paths.folder_names_and_paths.clear()
        folder_paths.folder_names_and_paths.update(saved)
        folder_paths.filename_list_cache.clear()
