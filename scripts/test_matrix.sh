#!/usr/bin/env bash
# make test: the whole suite once per ComfyUI that scripts/bootstrap.sh set up (.matrix/envs.tsv: the default
# ComfyUI 0.3.75, plus each newer snapshot found in ../shared/comfyui), each in its own venv.  The versions run side
# by side (each pytest process keeps one core busy: the tests mostly wait on their ComfyUI server, which works on one
# thread), their output printed version by version as each finishes; FREECURE_MATRIX_JOBS=1 runs them one after the
# other instead, printing as they go.  Prints which ComfyUI versions ran (and says so plainly when only one did), then
# one closing line with the totals.
# Arguments go to pytest (default: tests); FREECURE_COMFYUI=0.33.0 runs only that version.
# Exit status: 0 only when every version's run passed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ENVS=$ROOT/.matrix/envs.tsv
cd "$ROOT"
if [[ ! -s "$ENVS" ]]; then
  echo "test_matrix: $ENVS missing; run scripts/bootstrap.sh (make venv) first"
  exit 2
fi
args=("$@")
[[ ${#args[@]} -eq 0 ]] && args=(tests)
JOBS=${FREECURE_MATRIX_JOBS:-2}
# each version's run holds up to about 5 GB of tiny model files and server folders in pytest's temp folder at once
# (removed when it passes); say so up front rather than as "No space left on device" errors deep in the suite
tmp_root=${TMPDIR:-/tmp}
free_gb=$(df -Pk "$tmp_root" 2>/dev/null | awk 'NR == 2 {print int($4 / 1048576)}')
if [[ -n "$free_gb" && $free_gb -lt 12 ]]; then
  echo "[matrix] WARNING: only ${free_gb} GB free in $tmp_root; the suite needs about 5 GB per ComfyUI version" \
    "(old pytest-of-$(id -un) folders there can be deleted, or set TMPDIR to a roomier disk)"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run_version N VERSION PYTHON COMFY: one pytest run; output in $work/N.log, "rc seconds" in $work/N.rc
run_version() {
  local n=$1 version=$2 python=$3 comfy=$4 start rc
  {
    echo "================ FreeCure suite on ComfyUI $version ($comfy, $("$python" -c 'import torch; print("torch", torch.__version__)')) ================"
    start=$(date +%s)
    COMFYUI_PATH=$comfy HF_HUB_OFFLINE=1 "$python" -m pytest -q -rs "${args[@]}" 2>&1
    rc=$?
    echo "$rc $(( $(date +%s) - start ))" > "$work/$n.rc"
  } > "$work/$n.log"
}

declare -a versions
ran=0
while IFS=$'\t' read -r version python comfy; do
  [[ -z "$version" ]] && continue
  if [[ -n "${FREECURE_COMFYUI:-}" && "$FREECURE_COMFYUI" != "$version" ]]; then
    continue
  fi
  versions+=("$version")
  if [[ $JOBS -le 1 ]]; then
    run_version "$ran" "$version" "$python" "$comfy" &
    tail -n +1 --pid=$! -f "$work/$ran.log" 2>/dev/null || true
    wait
  else
    echo "[matrix] started the suite on ComfyUI $version"
    run_version "$ran" "$version" "$python" "$comfy" &
  fi
  ran=$((ran + 1))
done < "$ENVS"
wait

total_passed=0 total_failed=0 total_skipped=0 status=0
declare -a summaries
for ((n = 0; n < ran; n++)); do
  log=$work/$n.log
  [[ $JOBS -le 1 ]] || cat "$log"
  read -r rc seconds < "$work/$n.rc" || { rc=1; seconds=0; }
  last=$(grep -E '[0-9]+ (passed|failed|error|errors|skipped)' "$log" | tail -n1)
  count() { grep -oE "[0-9]+ $1" <<<"$last" | grep -oE '^[0-9]+' | head -n1 || true; }
  passed=$(count passed); failed=$(count failed); errors=$(count 'errors?'); skipped=$(count skipped)
  passed=${passed:-0}; failed=$(( ${failed:-0} + ${errors:-0} )); skipped=${skipped:-0}
  if [[ $rc -ne 0 ]]; then
    status=1
    [[ $failed -eq 0 ]] && failed=1   # pytest failed without a count (collection error, no tests): still a failure
  fi
  total_passed=$((total_passed + passed)); total_failed=$((total_failed + failed))
  total_skipped=$((total_skipped + skipped))
  summaries+=("ComfyUI ${versions[$n]}: $passed passed, $failed failed, $skipped skipped in ${seconds}s (pytest exit $rc)")
done

echo "================ FreeCure suite: ComfyUI versions run ================"
if [[ $ran -eq 0 ]]; then
  echo "no ComfyUI version matched FREECURE_COMFYUI=${FREECURE_COMFYUI:-} in $ENVS"
  echo "matrix: 0 passed, 1 failed"
  exit 1
fi
for s in "${summaries[@]}"; do echo "$s"; done
if [[ $ran -eq 1 ]]; then
  echo "NOTE: only one ComfyUI version ran.$( [[ -z "${FREECURE_COMFYUI:-}" ]] && echo " No newer ComfyUI snapshot" \
    "(ComfyUI-<version>.tar.gz in ../shared/comfyui, or \$FREECURE_COMFYUI_SNAPSHOTS) was set up by scripts/bootstrap.sh.")"
fi
echo "matrix: $total_passed passed, $total_failed failed, $total_skipped skipped"
exit $status
