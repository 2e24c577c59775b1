"""Model folders: registered without overwriting a user's entries; missing files name the folder."""
import os

import pytest

import folder_paths
from freecure_core.comfy_bridge import model_paths


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    saved = {k: (list(v[0]), set(v[1]) if isinstance(v[1], set) else v[1])
             for k, v in folder_paths.folder_names_and_paths.items()}
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    for name in ("face_parsing", "facedetection", "sams", "insightface"):
        folder_paths.folder_names_and_paths.pop(name, None)
    folder_paths.filename_list_cache.clear()
    yield tmp_path / "models"
    folder_paths.folder_names_and_paths.clear()
    folder_paths.folder_names_and_paths.update(saved)
    folder_paths.filename_list_cache.clear()


def test_user_entries_are_kept_and_the_default_added(models_dir, tmp_path):
    user = str(tmp_path / "elsewhere" / "face_parsing")
    folder_paths.folder_names_and_paths["face_parsing"] = ([user], {".pth"})
    model_paths.register_model_folders()
    paths, exts = folder_paths.folder_names_and_paths["face_parsing"]
    assert paths == [user, str(models_dir / "face_parsing")] and ".safetensors" in exts
    assert folder_paths.folder_names_and_paths["sams"][0] == [str(models_dir / "sams")]


def test_parser_files_from_both_folders_and_missing_file_errors(models_dir):
    model_paths.register_model_folders()
    assert model_paths.parser_choices() == ["79999_iter.pth"]  # placeholder when nothing is installed
    with pytest.raises(FileNotFoundError, match=r"79999_iter.pth.*models/face_parsing/"):
        model_paths.parser_path("79999_iter.pth")
    (models_dir / "face_parsing").mkdir(parents=True)
    (models_dir / "face_parsing" / "bisenet.safetensors").write_bytes(b"x")
    (models_dir / "facedetection").mkdir(parents=True)
    (models_dir / "facedetection" / "parsing_bisenet.pth").write_bytes(b"x")
    (models_dir / "facedetection" / "detection_Resnet50_Final.pth").write_bytes(b"x")
    folder_paths.filename_list_cache.clear()
    assert model_paths.parser_choices() == ["bisenet.safetensors", "facedetection/parsing_bisenet.pth"]
    assert model_paths.parser_path("facedetection/parsing_bisenet.pth").endswith(
        os.path.join("facedetection", "parsing_bisenet.pth"))
    with pytest.raises(FileNotFoundError, match="sam_vit_b_01ec64.pth.*models/sams/"):
        model_paths.sam_path("sam_vit_b_01ec64.pth")


def test_detector_folder(models_dir):
    model_paths.register_model_folders()
    assert model_paths.detector_folder("auto") is None
    with pytest.raises(FileNotFoundError, match="insightface/models/buffalo_l/"):
        model_paths.detector_folder("buffalo_l")
    (models_dir / "insightface" / "models" / "buffalo_l").mkdir(parents=True)
    assert model_paths.detector_folder("auto").endswith(os.path.join("models", "buffalo_l"))
