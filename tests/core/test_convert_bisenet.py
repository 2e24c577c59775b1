"""scripts/convert_bisenet.py turns a 79999_iter.pth-layout file into an equivalent .safetensors."""
import subprocess
import sys
from pathlib import Path

import torch

from freecure_core.parsing.bisenet import load_bisenet_state_dict, random_bisenet, save_bisenet

ROOT = Path(__file__).resolve().parents[2]


def test_pth_to_safetensors_keeps_every_tensor(tmp_path):
    src, dst = tmp_path / "79999_iter.pth", tmp_path / "79999_iter.safetensors"
    save_bisenet(random_bisenet(1), src)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_bisenet.py"), str(src), str(dst)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    a, b = load_bisenet_state_dict(src), load_bisenet_state_dict(dst)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_non_bisenet_file_is_refused(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, bad)
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "convert_bisenet.py"), str(bad),
                           str(tmp_path / "x.safetensors")], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "not a BiSeNet face-parsing checkpoint" in proc.stderr
