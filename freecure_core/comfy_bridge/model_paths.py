"""Where FreeCure finds model files in a ComfyUI install (never downloads anything).

Folders: `models/face_parsing` (BiSeNet `79999_iter.pth` or its `.safetensors`), also `models/facedetection`
for `parsing_bisenet.pth` / `79999_iter.pth` as face-restoration packs place them, `models/sams` (SAM
checkpoints), `models/instantid` (InstantID / CrossFaceID adapters) and
`models/insightface/models/<antelopev2|buffalo_l>/` (face detector and recognizer), and for the evaluation
nodes `models/clip_eval/<name>/` (Hugging Face CLIP folders) and `models/lpips/` (LPIPS files). Entries a user
made in extra_model_paths.yaml are kept; the default folder is only added to them.
"""
from __future__ import annotations

import os

import folder_paths

FACE_PARSING = "face_parsing"
FACE_DETECTION = "facedetection"
SAMS = "sams"
INSTANTID = "instantid"
INSIGHTFACE = "insightface"
CLIP_EVAL = "clip_eval"
LPIPS = "lpips"
DETECTOR_PACKS = ("antelopev2", "buffalo_l")
PARSER_FILES_IN_FACEDETECTION = ("parsing_bisenet.pth", "79999_iter.pth", "parsing_bisenet.safetensors")
DEFAULT_PARSER = "79999_iter.pth"
_WEIGHT_EXTS = {".pth", ".pt", ".safetensors", ".bin"}
_FOLDER_MODELS = (INSIGHTFACE, CLIP_EVAL)  # models that are folders, not files


def register_model_folders() -> None:
    """Make the folders above known to folder_paths, keeping any user configuration."""
    for name in (FACE_PARSING, FACE_DETECTION, SAMS, INSTANTID, INSIGHTFACE, CLIP_EVAL, LPIPS):
        default = os.path.join(folder_paths.models_dir, name)
        if name in folder_paths.folder_names_and_paths:
            paths, exts = folder_paths.folder_names_and_paths[name]
            if default not in paths:
                paths.append(default)
            if name not in _FOLDER_MODELS and isinstance(exts, set) and exts:
                exts.update(_WEIGHT_EXTS)
        else:
            folder_paths.folder_names_and_paths[name] = ([default], set(_WEIGHT_EXTS) if name not in _FOLDER_MODELS
                                                         else set())


def _files(folder_name: str) -> list[str]:
    try:
        return folder_paths.get_filename_list(folder_name)
    except KeyError:
        return []


def parser_choices() -> list[str]:
    """Face-parser files for the loader's list (face_parsing files, then facedetection/<known names>)."""
    found = [f for f in _files(FACE_PARSING) if os.path.splitext(f)[1].lower() in _WEIGHT_EXTS]
    found += [f"{FACE_DETECTION}/{f}" for f in _files(FACE_DETECTION) if os.path.basename(f) in PARSER_FILES_IN_FACEDETECTION]
    return found or [DEFAULT_PARSER]


def _check_name(what: str, name, folder: str) -> str:
    """`name` if it is a file name inside a model folder: a string, relative, without '..' parts (either slash).
    Absolute paths and '..' would read files outside ComfyUI's model folders, so they are refused outright."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"FreeCure: the {what} name must be a file name from ComfyUI/models/{folder}/, "
                         f"got {name!r}")
    parts = name.replace("\\", "/").split("/")
    if os.path.isabs(name) or name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise ValueError(f"FreeCure: the {what} name {name!r} is not allowed: pick a file from the list, a name "
                         f"inside ComfyUI/models/{folder}/ (absolute paths and '..' are refused; nothing outside "
                         "ComfyUI's model folders is read).")
    return name


def _missing(what: str, name: str, folder: str) -> FileNotFoundError:
    where = ", ".join(folder_paths.get_folder_paths(folder)) if folder in folder_paths.folder_names_and_paths else folder
    return FileNotFoundError(f"FreeCure: {what} '{name}' was not found. Put it in ComfyUI/models/{folder}/ "
                             f"(searched: {where}); FreeCure never downloads models.")


def parser_path(choice: str) -> str:
    """Full path of a parser_choices() entry; FileNotFoundError naming the folder it belongs in."""
    _check_name("face-parsing model", choice, FACE_PARSING)
    if choice.startswith(FACE_DETECTION + "/"):
        path = folder_paths.get_full_path(FACE_DETECTION, choice[len(FACE_DETECTION) + 1:])
        folder = FACE_DETECTION
    else:
        path = folder_paths.get_full_path(FACE_PARSING, choice)
        folder = FACE_PARSING
    if not path:
        raise _missing("face-parsing model", choice, folder)
    return path


def _weight_files(folder: str, default: str) -> list[str]:
    """Weight files in a model folder for a loader's list (`default` when there are none)."""
    return [f for f in _files(folder) if os.path.splitext(f)[1].lower() in _WEIGHT_EXTS] or [default]


def _weight_path(what: str, choice: str, folder: str) -> str:
    """Full path of a file chosen from a model folder; ValueError for names leaving the folder, FileNotFoundError
    naming the folder when it is not there."""
    _check_name(what, choice, folder)
    path = folder_paths.get_full_path(folder, choice)
    if not path:
        raise _missing(what, choice, folder)
    return path


def sam_choices() -> list[str]:
    """SAM checkpoints in models/sams."""
    return _weight_files(SAMS, "sam_vit_b_01ec64.pth")


def sam_path(choice: str) -> str:
    """Full path of a sam_choices() entry."""
    return _weight_path("SAM checkpoint", choice, SAMS)


def instantid_choices() -> list[str]:
    """InstantID / CrossFaceID adapter files in models/instantid."""
    return _weight_files(INSTANTID, "ip-adapter.bin")


def instantid_path(choice: str) -> str:
    """Full path of an instantid_choices() entry; FileNotFoundError naming models/instantid otherwise."""
    return _weight_path("InstantID adapter", choice, INSTANTID)


def detector_folder(pack: str) -> str | None:
    """models/insightface/models/<pack> if it exists (pack 'auto' = the first of antelopev2, buffalo_l)."""
    if pack != "auto" and pack not in DETECTOR_PACKS:  # a folder name from a prompt: never a path
        raise ValueError(f"FreeCure: face_detector {pack!r} is not one of auto, {', '.join(DETECTOR_PACKS)}")
    packs = DETECTOR_PACKS if pack == "auto" else (pack,)
    roots = folder_paths.get_folder_paths(INSIGHTFACE) if INSIGHTFACE in folder_paths.folder_names_and_paths else []
    for name in packs:
        for root in roots:
            folder = os.path.join(root, "models", name)
            if os.path.isdir(folder):
                return folder
    if pack != "auto":
        raise FileNotFoundError(f"FreeCure: the insightface model pack '{pack}' was not found. Put its folder at "
                                f"ComfyUI/models/insightface/models/{pack}/ (searched: {', '.join(roots)}).")
    return None


def clip_eval_choices() -> list[str]:
    """Subfolders of models/clip_eval holding a config.json (Hugging Face CLIP folders)."""
    roots = folder_paths.get_folder_paths(CLIP_EVAL) if CLIP_EVAL in folder_paths.folder_names_and_paths else []
    found = sorted({d for root in roots if os.path.isdir(root) for d in os.listdir(root)
                    if os.path.isfile(os.path.join(root, d, "config.json"))})
    return found or ["clip-vit-large-patch14"]


def clip_eval_path(choice: str) -> str:
    """Full path of a clip_eval_choices() entry; FileNotFoundError naming models/clip_eval otherwise."""
    _check_name("CLIP folder", choice, CLIP_EVAL)
    roots = folder_paths.get_folder_paths(CLIP_EVAL) if CLIP_EVAL in folder_paths.folder_names_and_paths else []
    for root in roots:
        if os.path.isdir(os.path.join(root, choice)):
            return os.path.join(root, choice)
    raise FileNotFoundError(f"FreeCure: CLIP folder '{choice}' was not found. Put a Hugging Face CLIP folder "
                            f"(config.json, model.safetensors, vocab.json, merges.txt), e.g. "
                            f"openai/clip-vit-large-patch14, at ComfyUI/models/{CLIP_EVAL}/{choice}/ (searched: "
                            f"{', '.join(roots)}). FreeCure never downloads models.")


def lpips_choices() -> list[str]:
    """LPIPS weight files in models/lpips."""
    return _weight_files(LPIPS, "lpips_alex.safetensors")


def lpips_path(choice: str) -> str:
    """Full path of an lpips_choices() entry; FileNotFoundError naming models/lpips otherwise."""
    return _weight_path("LPIPS file", choice, LPIPS)
