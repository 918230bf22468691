#!/usr/bin/env bash
# Build and check ctensor on a GPU machine, stage by stage, keeping each stage's output.
#
#   bash bench/gpu_run.sh STAGE... [-o OUTDIR]
#
# Stages (in the order they are best run; see bench/README.md, "How to run on a GPU machine"):
#   build      configure and build build-gpu (CUDA on, sm_90) with the packages of .device/
#   test       every CTest suite, the GPU ones included (they must not report themselves skipped),
#              except test_cuda_big
#   big        test_cuda_big (tensors over 2^31 elements, up to about 32 GiB per test), on its own
#   bench      ctbench --device cuda (all sections) and compare_torch.py --device cuda next to it
#   examples   the main job on the GPU (its defaults: 10 epochs, >= 92%), then the transfer-learning
#              example from its checkpoint, and the ResNet example with its defaults (15 epochs, >= 93.5%; 45 s on an H100)
#   memcheck   every GPU suite under compute-sanitizer --tool memcheck
#   racecheck  every GPU suite under compute-sanitizer --tool racecheck (both leave out test_cuda_big)
#   bigcheck   test_cuda_big under memcheck, its tests one at a time;
#              racecheck looks at shared memory, which its kernels use as on small tensors
# Each stage writes at most two files into OUTDIR (default: $OUT when set, else
# bench/results/raw): STAGE.log, plus the JSON Lines of the bench stage (memcheck and racecheck
# fill a folder TOOL.d of per-test logs while they run); env.txt describes the machine and the
# commit. Exit status: 0 when every stage passed, else that of the last failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
stages=()
out=${OUT:-bench/results/raw}
while [ $# -gt 0 ]; do
  case $1 in
    -o) out=$2; shift 2 ;;
    build|test|big|bench|examples|memcheck|racecheck|bigcheck) stages+=("$1"); shift ;;
    *) echo "gpu_run.sh: unknown stage '$1'" >&2; exit 2 ;;
  esac
done
[ ${#stages[@]} -gt 0 ] || { sed -n '2,21p' "$0"; exit 2; }
mkdir -p "$out"
build="build-gpu"

cmake_extra=()
if [ -f .device/on-device.sh ]; then
  # shellcheck disable=SC1091
  source .device/on-device.sh >/dev/null
  # What the 2026-11-22 H100 run needed beyond on-device.sh: its libz.so symlink dangles under
  # .device/root (zlib1g itself is not unpacked), so CMake took libz.a, which cannot go into
  # libctensor.so: use the machine's own libz.so.1. And OpenBLAS's OpenMP build (prepare.sh with
  # EXTRA_DEBS="libopenblas0-openmp libopenblas-openmp-dev"), first on the loader's path too.
  lib=$PWD/.device/root/usr/lib/x86_64-linux-gnu
  z=$(ls /usr/lib/x86_64-linux-gnu/libz.so.1 /lib/x86_64-linux-gnu/libz.so.1 2>/dev/null | head -1)
  [ -n "$z" ] && cmake_extra+=(-DZLIB_LIBRARY="$z" -DZLIB_LIBRARY_RELEASE="$z")
  if [ -f "$lib/openblas-openmp/libopenblas.so" ]; then
    cmake_extra+=(-DOPENBLAS_LIBRARY="$lib/openblas-openmp/libopenblas.so"
                  -DOPENBLAS_INCLUDE_DIR="$PWD/.device/root/usr/include/x86_64-linux-gnu/openblas-openmp")
    export LD_LIBRARY_PATH="$lib/openblas-openmp:$LD_LIBRARY_PATH"
  fi
else
  echo "gpu_run.sh: no .device/ here (run ../shared/device/prepare.sh on the development machine and carry .device)" >&2
fi

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem,power.limit --format=csv 2>&1
  nvcc --version 2>&1 | tail -1
  echo "cpu: $(lscpu | grep 'Model name' | sed 's/.*: *//'), $(nproc) cores; python3: $(python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' 2>&1)"
} > "$out/env.txt"

status=0
run_stage() { # name, command...: the command's output goes to OUTDIR/name.log
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name: $*"
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$out/$name.log"
  [ $rc -eq 0 ] || status=$rc
}

gpu_suites() { ls "$build"/tests/test_cuda_* 2>/dev/null; }

# limit SECONDS CMD...: timeout, TERM then KILL 15 s later, to CMD's whole process group
# (timeout runs it in a group of its own: Criterion's test workers and compute-sanitizer's
# target go with it, and a sanitizer hung on a test still gets to write its report); status
# 124 when the time ran out. Not setsid: the device tool kills what a command leaves behind
# when it returns, except a new session's processes.
limit() { timeout --kill-after=15 "$@"; }

sanitize() { # tool: every GPU suite under compute-sanitizer, one process per test, 8 at a time
  # Each test's log goes to OUTDIR/TOOL.d/ as it finishes, so that a run cut off by the device's
  # time limit still brings back what ran; the folder is merged into TOOL.log at the end.
  local tool=$1 rc=0 t name
  local tmp="$out/$tool.d"
  rm -rf "$tmp" && mkdir -p "$tmp"
  for t in $(gpu_suites); do
    # test_cuda_big (tensors over 2^31 elements, up to 28 GiB per test) has a stage of its own.
    [ "$(basename "$t")" = test_cuda_big ] && continue
    for name in $("$t" --list 2>/dev/null | awk '/: [0-9]+ tests?$/ {suite = $1; sub(":", "", suite); next} {print suite "/" $NF}'); do
      # test_cuda_reduce's 2 GiB all-reduce takes minutes under racecheck: memcheck only.
      [ "$tool" = racecheck ] && [ "$name" = cuda_reduce/all_reduce_over_two_gib ] && continue
      while [ "$(jobs -rp | wc -l)" -ge 8 ]; do sleep 1; done
      ( limit 600 compute-sanitizer --tool "$tool" --error-exitcode 99 "$t" --filter "$name" --jobs 1 -q \
          > "$tmp/$(basename "$t").${name//\//.}.log" 2>&1
        echo "--- $tool: $(basename "$t") $name: exit $?" >> "$tmp/$(basename "$t").${name//\//.}.log" ) &
    done
  done
  wait
  cat "$tmp"/*.log
  grep -q ': exit [1-9]' "$tmp"/*.log && rc=1
  rm -rf "$tmp"
  return $rc
}

examples() {
  local rc=0 bin=$build/python_free_examples tmp
  tmp=$(mktemp -d)
  timeout 600 "$bin/fashion_mnist_cnn" --device cuda --min-accuracy 0.92 \
    --checkpoint "$tmp/cnn.safetensors" --metrics "$tmp/cnn.jsonl" || rc=$?
  timeout 300 "$bin/transfer_learning" --device cuda --checkpoint "$tmp/cnn.safetensors" || rc=$?
  timeout 300 "$bin/resnet_fashion_mnist" --device cuda --checkpoint "$tmp/resnet.safetensors" || rc=$?
  # The main job again with its steps replayed from a CUDA graph (compare the img/s).
  timeout 600 "$bin/fashion_mnist_cnn" --device cuda --cuda-graph --min-accuracy 0.92 \
    --checkpoint "$tmp/cnn-graph.safetensors" --metrics "$tmp/cnn-graph.jsonl" || rc=$?
  rm -rf "$tmp"
  return $rc
}

for stage in "${stages[@]}"; do
  case $stage in
    build)
      run_stage build bash -c "cmake -B $build -G Ninja -DCT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release ${cmake_extra[*]} && cmake --build $build -j $(nproc)" ;;
    test)
      run_stage test ctest --test-dir "$build" --output-on-failure -j 4 -E '^test_cuda_big$' ;;
    big)
      run_stage big limit 400 "$build/tests/test_cuda_big" --jobs 1 --verbose ;;
    bench)
      run_stage bench bash -c "$build/bench/ctbench --device cuda --json $out/ctbench-cuda.jsonl && \
        python3 bench/compare_torch.py --device cuda --ctbench $build/bench/ctbench --json $out/torch-cuda.jsonl" ;;
    examples)
      run_stage examples examples ;;
    memcheck)
      run_stage memcheck sanitize memcheck ;;
    racecheck)
      run_stage racecheck sanitize racecheck ;;
    bigcheck)
      run_stage bigcheck limit 480 compute-sanitizer --tool memcheck --error-exitcode 99 \
        "$build/tests/test_cuda_big" --jobs 1 --verbose ;;
  esac
done
exit $status
