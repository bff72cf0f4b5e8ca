#!/usr/bin/env bash
# The GPU check (issue 27): on a machine with one CUDA GPU and no network, with whatever python3 + torch it has,
#   1. the CUDA-marked tests (tests/test_cuda.py: training, exact resume on the device, vectorised seeds, every
#      analysis and diagnose, a study whose 2 workers share the GPU),
#   2. the training benchmark against pythae (benchmarks/train_vs_pythae.py),
#   3. document 002's full latent-dim study (`vaelab study latent-dim`), for what is left of the time budget
#      (resumable: a second call on the same machine continues it),
# then writes $OUT/gpu_check.json (GPU, torch, test counts, epoch seconds vaelab vs pythae, the study's wall time and
# runs finished; each part's exit status, 124 = stopped at its time limit) and exits 0 whatever failed.
#
#   benchmarks/gpu_check.sh [--dry-run] [--budget-s 540] [--only tests,bench,study]
#       --dry-run: on the CPU, tiny scales, the quick tests; --only: some parts (a device call runs 10 minutes at most:
#       tests and bench in one call, then the study alone in the next, on the same machine while it is warm)
#   benchmarks/gpu_check.sh --prepare                      # here, before: copy the datasets into .gpu-data/
#
# Nothing is installed from the network. vaelab runs from src/ (PYTHONPATH). Python packages the machine lacks
# (pydantic, pythae: see docs/performance.md) travel as wheels in .whl/ and are installed offline; the datasets
# (MNIST for the benchmark, Fashion-MNIST for the study) travel in .gpu-data/ (--prepare). Carry both.
set -u -o pipefail
cd "$(dirname "$0")/.."
DRY=0 BUDGET=540 PREPARE=0 ONLY=tests,bench,study
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=1 ;;
        --prepare) PREPARE=1 ;;
        --budget-s) BUDGET=${2:-}; shift ;;
        --only) ONLY=${2:-}; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$1'" \
                "(accepted: --dry-run, --budget-s SECONDS, --only PARTS, --prepare)" >&2
           exit 2 ;;
    esac
    shift
done
case "$BUDGET" in
    ''|*[!0-9]*) echo "gpu_check.sh: --budget-s '$BUDGET' is not a whole number of seconds" >&2; exit 2 ;;
esac
for part in ${ONLY//,/ }; do
    case "$part" in tests|bench|study) ;; *)
        echo "gpu_check.sh: --only names '$part'; the parts are tests, bench and study (comma-separated)" >&2; exit 2 ;;
    esac
done
want() { case ",$ONLY," in *",$1,"*) return 0 ;; esac; return 1; }

if [ "$PREPARE" = 1 ]; then  # here, where the datasets are: only their source files (the arrays are rebuilt there)
    src=${VAELAB_DATA:-$HOME/.cache/vaelab}
    for name in mnist fashion-mnist; do
        mkdir -p ".gpu-data/$name"
        cp "$src/$name"/*.gz ".gpu-data/$name/" 2>/dev/null \
            || echo "note: $src/$name has no source files; fetch it first (vaelab data fetch $name)"
    done
    grep -qx '/.gpu-data/' .git/info/exclude 2>/dev/null || echo '/.gpu-data/' >> .git/info/exclude
    du -sh .gpu-data
    echo "carry: .gpu-data (and .whl if you made it)"
    exit 0
fi

START=$(date +%s)
OUT_DIR=${OUT:-benchmarks/out/gpu_check}
WORK=$(mktemp -d /tmp/vaelab-gpu-check.XXXXXX)
STUDIES=${GPU_CHECK_STUDIES:-/tmp/vaelab-gpu-check-studies}  # fixed: a rerun on the same machine resumes the study
mkdir -p "$OUT_DIR" "$STUDIES"
LOG="$OUT_DIR/gpu_check.log"
: > "$LOG"
say() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$LOG"; }
left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# run NAME LIMIT CMD...: one part, under its time limit (no more than what is left), logged, its status recorded
run() {
    local name=$1 limit=$2; shift 2
    local rest; rest=$(left)
    [ "$limit" -gt "$rest" ] && limit=$rest
    if [ "$limit" -lt 20 ]; then
        say "$name: not run, the time budget is spent"
        printf '%s\t%s\t%s\t%s\n' "$name" 125 0 "not run: time budget spent" >> "$WORK/steps.tsv"
        return
    fi
    say "$name: $* (limit ${limit}s)"
    local t0 code; t0=$(date +%s)
    timeout -k 10 "$limit" "$@" >> "$LOG" 2>&1; code=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$code" "$(( $(date +%s) - t0 ))" "${NOTE:-}" >> "$WORK/steps.tsv"
    say "$name: exit $code"
}

PY=""
for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import torch' >/dev/null 2>&1; then
        PY=$(command -v "$candidate"); break
    fi
done
if [ -z "$PY" ]; then
    say "no python with torch found: nothing can run"
    printf '%s\t%s\t%s\t%s\n' env 127 0 "no python with torch" >> "$WORK/steps.tsv"
    PY=$(command -v python3 || command -v python)
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TQDM_DISABLE=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # carried wheels, installed offline into a folder of their own
    NOTE="offline wheels from .whl" run wheels 120 "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
[ -d .gpu-data ] && export VAELAB_DATA="$PWD/.gpu-data"

if [ "$DRY" = 1 ]; then
    touch "$WORK/dry_run"
    # the CPU takes many minutes over every analysis and a 2-worker study: the dry run leaves those two tests out
    # (run them alone: VAELAB_TEST_DEVICE=cpu pytest -m cuda tests/test_cuda.py -k "analysis or study")
    DEVICE=cpu EPOCHS=2 PRECISIONS=fp32 SCALE=(--scale tiny) WORKERS=2 TESTS=(-k "not analysis and not study")
else
    DEVICE=cuda EPOCHS=10 PRECISIONS=fp32,bf16,auto SCALE=() WORKERS=4 TESTS=()
fi
say "python $PY, device $DEVICE, budget ${BUDGET}s, out $OUT_DIR"
"$PY" benchmarks/gpu_check.py env > "$WORK/env.json" 2>> "$LOG" || echo '{}' > "$WORK/env.json"
cat "$WORK/env.json" | tee -a "$LOG"

# 1. the CUDA-marked tests (on the CPU in a dry run)
want tests && VAELAB_TEST_DEVICE=$DEVICE run tests 300 "$PY" -m pytest -q -m cuda tests/test_cuda.py \
    -p no:cacheprovider \
    -o addopts="-ra" --junitxml="$WORK/junit.xml" "${TESTS[@]}"

# 2. vaelab against pythae (its --device is passed where the script has one; harness.train_pythae trains pythae
#    on the CPU until it takes a device: see docs/performance.md)
BENCH=(--epochs "$EPOCHS" --precisions "$PRECISIONS" --json "$OUT_DIR/train_vs_pythae.json")
"$PY" benchmarks/train_vs_pythae.py --help 2>/dev/null | grep -q -- '--device' && BENCH+=(--device "$DEVICE")
want bench && run train_vs_pythae 200 "$PY" benchmarks/train_vs_pythae.py "${BENCH[@]}"

# 3. document 002's latent-dim study (full scale on the GPU, tiny in a dry run), with what is left of the budget
STUDY_ARGS=(study latent-dim "${SCALE[@]}" --out "$STUDIES" --workers "$WORKERS")
name=latent-dim; [ "$DRY" = 1 ] && name=latent-dim-tiny
if want study; then
    echo "$STUDIES/$name" > "$WORK/study_folder"
    NOTE="resumable: rerun on the same machine to continue" run study "$(left)" "$PY" -m vaelab "${STUDY_ARGS[@]}"
    for f in results.csv provenance.json; do
        [ -f "$STUDIES/$name/$f" ] && cp "$STUDIES/$name/$f" "$OUT_DIR/study_$f"
    done
fi

"$PY" benchmarks/gpu_check.py collect "$WORK" "$OUT_DIR" 2>> "$LOG" | tee -a "$LOG" \
    || say "could not write gpu_check.json (see the log)"
say "done: $OUT_DIR/gpu_check.json"
exit 0
