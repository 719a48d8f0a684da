#!/usr/bin/env bash
# Runs on the GPU machine, from the checkout root, after `scripts/gpu-pack.sh` built `.gpu/`
# here: the GPU fault checks of issue #6 in one command, within one device call (10 minutes):
#   1. the faults tests of both GPU backends (`test-faults`: CUDA, `test-faults_cuda`: cubecl
#      on CUDA), each test in its own process: out-of-memory is a typed error and the backend
#      keeps working; a problem too large for the device is a typed error; device memory back
#      to its baseline after 10,000 op calls (their JSON lines land in $OUT);
#   2. compute-sanitizer memcheck, racecheck and initcheck over the CUDA suite (`test-suite`)
#      and the cubecl-CUDA suite (`test-suite_cuda`) at a few proptest cases.
#
#   bash scripts/gpu-faults.sh [faults] [sanitize]      (default: both)
#
# Writes to $OUT (few files: the device tool brings back at most 8):
#   faults.json      per backend and test: status, seconds, and the memory test's JSON line
#   sanitizer.json   per tool and suite: errors (ERROR SUMMARY), tests passed/failed, seconds,
#                    exit status, timed out or not
#   faults-cuda-memory.json, faults-cubecl-cuda-memory.json   the memory tests' results
#   faults.log, sanitizer.log   the logs, each run's error reports and tail (trimmed)
#   gpu.txt          nvidia-smi's view of the GPU
#
# Environment: BUDGET (seconds for the whole script, default 530), FAULT_TIMEOUT (per faults
# test, default 150), FAULT_CALLS (op calls of the memory tests, default 10000),
# SANITIZE_CASES (proptest cases under the sanitizers, default 3), SANITIZE_FILTER (test
# name filters of the suites under the sanitizers, default `bf16`; empty runs every test),
# SANITIZE_TOOLS (default `memcheck racecheck initcheck`), SANITIZE_SUITES (default
# `test-suite test-suite_cuda`), LOG_TAIL (lines kept per run, default 120).
# NOTE: the sanitizers slow kernels 10-100x and every run gets an equal share of the time
# left; a run that meets its share is killed and reported as timed out (no ERROR SUMMARY).
# cubecl compiles its kernels with NVRTC on first use: with `.gpu/cache.tar.xz` from an
# earlier `gpu-run.sh ... bundle` the cache is warm and the cubecl runs are much faster.
set -uo pipefail
start=$(date +%s)
budget=${BUDGET:-530}
out=${OUT:-/tmp/moekit-out}
mkdir -p "$out"
raw=$(mktemp -d)
steps=${*:-faults sanitize}
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv >"$out/gpu.txt" 2>&1
cat "$out/gpu.txt"
if [ -f .gpu/bins.tar.xz ] && ! [ -d .gpu/bin ]; then
    (cd .gpu && tar xJf bins.tar.xz)
fi
# The compiled-kernel caches, as gpu-run.sh sets them up.
cache=$PWD/.gpu/cache
mkdir -p "$cache"
[ -f .gpu/cache.tar.xz ] && tar xJf .gpu/cache.tar.xz -C "$cache"
export MOEKIT_CUDA_CACHE=${MOEKIT_CUDA_CACHE:-$cache/moekit-cuda}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-$cache/nv} CUDA_CACHE_MAXSIZE=${CUDA_CACHE_MAXSIZE:-4294967296}
[ -e cubecl.toml ] || printf '[compilation]\ncache = { file = "%s" }\n' "$cache/cubecl" >cubecl.toml
export MOEKIT_NO_SKIP=1
tail_n=${LOG_TAIL:-120}
rc=0

left() { echo $((start + budget - $(date +%s))); }

# The trimmed log of one run: its header, the sanitizer's first error reports, its tail.
trim_into() { # RAW_LOG COMBINED_LOG TITLE
    {
        echo "===== $3"
        if grep -q '^========= ' "$1"; then
            echo "--- first sanitizer reports"
            grep -m 60 '^========= ' "$1"
            echo "--- tail"
        fi
        tail -n "$tail_n" "$1"
    } >>"$2"
}

for step in $steps; do
    case $step in
    faults)
        : >"$out/faults.log"
        rows=$raw/faults.tsv
        : >"$rows"
        for pair in test-faults:cuda test-faults_cuda:cubecl-cuda; do
            bin=.gpu/bin/${pair%%:*} be=${pair#*:}
            if ! [ -x "$bin" ]; then
                echo "== $bin missing" | tee -a "$out/faults.log"
                printf '%s\t%s\tmissing\t0\n' "$be" "-" >>"$rows"
                rc=1
                continue
            fi
            for t in $("$bin" --list 2>/dev/null | sed -n 's/: test$//p'); do
                lim=$(($(left) - 30))
                [ "$lim" -gt "${FAULT_TIMEOUT:-150}" ] && lim=${FAULT_TIMEOUT:-150}
                if [ "$lim" -lt 10 ]; then
                    printf '%s\t%s\tnot_run\t0\n' "$be" "$t" >>"$rows"
                    continue
                fi
                echo "== $be: $t (limit ${lim}s)"
                log=$raw/faults-$be-$t.log
                t0=$(date +%s)
                MOEKIT_FAULT_CALLS=${FAULT_CALLS:-10000} MOEKIT_RESULTS_DIR=$out timeout -k 5 "$lim" \
                    "$bin" --exact "$t" --test-threads=1 --nocapture >"$log" 2>&1
                code=$?
                secs=$(($(date +%s) - t0))
                status=passed
                [ $code = 0 ] || { status=failed; rc=1; }
                [ $code = 124 ] || [ $code = 137 ] && status=timed_out
                echo "   $status (${secs}s, exit $code)"
                grep -E "panicked|^\{\"test\"" "$log" | head -5
                printf '%s\t%s\t%s\t%s\n' "$be" "$t" "$status" "$secs" >>"$rows"
                trim_into "$log" "$out/faults.log" "$be $t: $status, exit $code, ${secs}s"
            done
        done
        python3 - "$rows" "$out" >"$out/faults.json" <<'PY'
import json, os, sys
rows, out = sys.argv[1], sys.argv[2]
res = {"tests": [], "memory": {}}
for line in open(rows):
    be, test, status, secs = line.rstrip("\n").split("\t")
    res["tests"].append({"backend": be, "test": test, "status": status, "seconds": int(secs)})
for be in ("cuda", "cubecl-cuda"):
    p = os.path.join(out, f"faults-{be}-memory.json")
    if os.path.exists(p):
        try:
            res["memory"][be] = json.loads(open(p).read())
        except ValueError as e:
            res["memory"][be] = {"unreadable": str(e)}
res["passed"] = bool(res["tests"]) and all(t["status"] == "passed" for t in res["tests"])
print(json.dumps(res, indent=1))
PY
        ;;
    sanitize)
        : >"$out/sanitizer.log"
        cs=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
        rows=$raw/sanitizer.tsv
        : >"$rows"
        tools=${SANITIZE_TOOLS:-memcheck racecheck initcheck}
        suites=${SANITIZE_SUITES:-test-suite test-suite_cuda}
        n_runs=0
        for _ in $tools; do for _ in $suites; do n_runs=$((n_runs + 1)); done; done
        for tool in $tools; do
            for suite in $suites; do
                bin=.gpu/bin/$suite
                # An equal share of the time left for each run still to come.
                lim=$((($(left) - 15) / n_runs))
                n_runs=$((n_runs - 1))
                if ! [ -x "$bin" ] || ! [ -x "$cs" ] || [ "$lim" -lt 15 ]; then
                    why=missing
                    [ -x "$cs" ] || why=no_sanitizer
                    [ "$lim" -lt 15 ] && why=no_time_left
                    printf '%s\t%s\t%s\t0\t-1\t\n' "$tool" "$suite" "$why" >>"$rows"
                    rc=1
                    continue
                fi
                echo "== compute-sanitizer $tool $suite (limit ${lim}s)"
                log=$raw/sanitizer-$tool-$suite.log
                t0=$(date +%s)
                # shellcheck disable=SC2086
                MOEKIT_PROPTEST_CASES=${SANITIZE_CASES:-3} timeout -k 5 "$lim" "$cs" --tool "$tool" \
                    --target-processes all --error-exitcode 9 "$bin" --test-threads=1 ${SANITIZE_FILTER-bf16} \
                    >"$log" 2>&1
                code=$?
                secs=$(($(date +%s) - t0))
                status=done
                [ $code = 124 ] || [ $code = 137 ] && status=timed_out
                [ $code = 0 ] || rc=1
                printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$suite" "$status" "$secs" "$code" "$log" >>"$rows"
                grep -E "ERROR SUMMARY|RACECHECK SUMMARY|^test result" "$log" | tail -3
                trim_into "$log" "$out/sanitizer.log" "$tool $suite: $status, exit $code, ${secs}s"
            done
        done
        python3 - "$rows" >"$out/sanitizer.json" <<'PY'
import json, re, sys
runs = []
for line in open(sys.argv[1]):
    tool, suite, status, secs, code, log = line.rstrip("\n").split("\t")
    r = {"tool": tool, "suite": suite, "status": status, "seconds": int(secs), "exit": int(code)}
    if log:
        text = open(log, errors="replace").read()
        m = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        r["errors"] = int(m[-1]) if m else None  # None: no summary (killed or crashed)
        m = re.findall(r"RACECHECK SUMMARY: (\d+) hazard", text)
        if m:
            r["hazards"] = int(m[-1])
        passed = failed = 0
        for p, f in re.findall(r"^test result: \w+\. (\d+) passed; (\d+) failed", text, re.M):
            passed, failed = passed + int(p), failed + int(f)
        r["tests_passed"], r["tests_failed"] = passed, failed
        r["skipped"] = len(re.findall(r"^SKIPPED", text, re.M))
    runs.append(r)
ok = bool(runs) and all(r.get("errors") == 0 and r["exit"] == 0 for r in runs)
print(json.dumps({"runs": runs, "clean": ok}, indent=1))
PY
        cat "$out/sanitizer.json"
        ;;
    *) echo "gpu-faults.sh: unknown step \`$step\` (faults, sanitize)" >&2; rc=2 ;;
    esac
done
rm -rf "$raw"
echo "gpu-faults.sh: $(($(date +%s) - start))s, $( [ $rc = 0 ] && echo all clean || echo 'SOMETHING FAILED (see faults.json, sanitizer.json)')"
exit $rc
