#!/usr/bin/env bash
# fastbn on a machine with an NVIDIA GPU, in one command (no internet needed if the
# packages are already installed):
#
#   scripts/gpu-check.sh [OUTDIR]          # default: ./gpu-check
#
# 1. picks a Python: $PYTHON if set, else the active virtualenv/conda env, else the
#    repository's .venv (created with --system-site-packages if missing);
# 2. installs what is missing: `pip install -e ".[test,cuda]"`, then
#    `numba-cuda[cu12]` (the CUDA libraries) if numba-cuda sees no GPU; a step that
#    fails (offline) is reported and the rest goes on; GPU_CHECK_NO_INSTALL=1 skips both;
# 3. prints nvidia-smi and numba's device list;
# 4. runs, on the hardware (NUMBA_ENABLE_CUDASIM=0), the hardware-only tests (`@gpu`
#    in tests/test_cuda.py and tests/test_masked_cuda.py), then
#    `fastbn bench --device cuda --quick` (as `python -m fastbn`), then the whole
#    GPU suite.
#
# Writes two files into OUTDIR: bench-cuda.json (the bench's report, plus a
# "gpu_check" field: every step's exit status, seconds and last line) and
# gpu-check.log (everything printed).  Each step runs under `timeout`; the
# budgets below add up to under 10 minutes.  Exit status: 0 when every step
# passed, 1 otherwise.

set -u -o pipefail

T_SMI=15        # nvidia-smi, and again numba's device list
T_INSTALL=100   # pip install -e ".[test,cuda]"
T_CU12=50       # pip install "numba-cuda[cu12]"
T_HW_TESTS=80   # the hardware-only tests
T_BENCH=170     # the quick GPU bench (compiles every kernel it times)
T_SUITE=130     # the whole GPU suite on the hardware, last: a timeout there costs nothing else

repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-gpu-check}
mkdir -p "$out" || exit 1
out=$(cd "$out" && pwd)
log="$out/gpu-check.log"
json="$out/bench-cuda.json"
steps=$(mktemp)
trap 'rm -f "$steps"' EXIT

# step NAME TIMEOUT CMD...: run CMD under timeout, record status, seconds and last line
step() {
    local name=$1 limit=$2 start rc last tmp
    shift 2
    echo
    echo "=== $name (timeout ${limit}s): $*"
    tmp=$(mktemp)
    start=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$tmp"
    rc=${PIPESTATUS[0]}
    last=$(grep -v '^[[:space:]]*$' "$tmp" | tail -n 1 | tr '\t' ' ')
    rm -f "$tmp"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        last="TIMED OUT after ${limit}s; $last"
    fi
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - start))" "$last" >>"$steps"
    echo "=== $name: exit $rc"
    return "$rc"
}

pick_python() {
    if [ -n "${PYTHON:-}" ]; then
        echo "$PYTHON"
    elif [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ] && command -v python >/dev/null; then
        command -v python
    else
        if [ ! -x "$repo/.venv/bin/python" ]; then
            python3 -m venv --system-site-packages "$repo/.venv" >&2 || return 1
        fi
        echo "$repo/.venv/bin/python"
    fi
}

main() {
    cd "$repo" || return 1
    echo "fastbn gpu-check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -a)"
    echo "repository: $repo at $(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        "$(git status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')"
    local py
    py=$(pick_python) || { echo "no Python: set PYTHON=/path/to/python"; return 1; }
    echo "python: $py ($("$py" --version 2>&1))"
    export NUMBA_ENABLE_CUDASIM=0 PYTHONUNBUFFERED=1
    local pip=("$py" -m pip install --retries 1 --timeout 15)

    step nvidia-smi "$T_SMI" nvidia-smi || echo "nvidia-smi failed: is the NVIDIA driver installed?"

    if [ "${GPU_CHECK_NO_INSTALL:-0}" = 1 ]; then
        echo "GPU_CHECK_NO_INSTALL=1: no install"
    elif ! "$py" -c "import fastbn, numba_cuda, pytest, sys; \
            sys.exit(not fastbn.__file__.startswith('$repo'))" 2>/dev/null; then
        step install "$T_INSTALL" "${pip[@]}" -e ".[test,cuda]" \
            || echo "pip install -e '.[test,cuda]' failed (offline?); going on with what is there"
    else
        echo "fastbn (this checkout), numba-cuda and pytest are installed: no install"
    fi
    local usable="from numba import cuda; import sys; sys.exit(not cuda.is_available())"
    if [ "${GPU_CHECK_NO_INSTALL:-0}" != 1 ] && ! "$py" -c "$usable" 2>/dev/null; then
        step install-cu12 "$T_CU12" "${pip[@]}" "numba-cuda[cu12]" \
            || echo "pip install 'numba-cuda[cu12]' failed (offline?)"
    fi
    step devices "$T_SMI" "$py" -c "from numba import cuda; cuda.detect()" || true

    step gpu-tests "$T_HW_TESTS" "$py" -m pytest -q -p no:cacheprovider -rs \
        tests/test_cuda.py tests/test_masked_cuda.py -k "real_gpu or interop"
    rm -f "$json"
    step bench "$T_BENCH" "$py" -m fastbn bench --device cuda --quick --json "$json"

    step gpu-suite "$T_SUITE" "$py" -m pytest -q -p no:cacheprovider -x \
        tests/test_cuda.py tests/test_masked_cuda.py tests/test_cuda_parity.py \
        tests/test_cuda_geometry.py tests/test_cuda_overlap.py tests/test_gpu_dispatch.py \
        tests/test_bench_cuda.py
    # one JSON: the bench's report (empty rows if it did not finish) + the steps
    "$py" - "$json" "$steps" <<'EOF'
import json, os, subprocess, sys

path, steps = sys.argv[1:]
report = {"machine": None, "rows": []}
if os.path.exists(path):
    with open(path) as f:
        report = json.load(f)
rows = []
with open(steps) as f:
    for line in f:
        name, rc, seconds, last = (line.rstrip("\n").split("\t", 3) + [""])[:4]
        rows.append({"step": name, "rc": int(rc), "seconds": int(seconds), "last_line": last})
try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True,
                         timeout=20).stdout.strip()
except Exception as exc:
    smi = f"unavailable: {exc}"
# an install that fails offline is reported, not counted: what counts is what ran
counted = ("nvidia-smi", "gpu-tests", "gpu-suite", "bench")
ok = all(s["rc"] == 0 for s in rows if s["step"] in counted) and bool(report["rows"])
report["gpu_check"] = {"nvidia_smi": smi, "steps": rows, "ok": ok}
with open(path, "w") as f:
    json.dump(report, f, indent=1)
print("\nsummary:")
for s in rows:
    print(f"  {s['step']:<13} exit {s['rc']:>3} {s['seconds']:>4}s  {s['last_line'][:90]}")
print("ok" if ok else "SOME STEPS FAILED", "->", path)
sys.exit(0 if ok else 1)
EOF
}

main "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
echo "log: $log" | tee -a "$log"
exit "$rc"
