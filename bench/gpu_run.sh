#!/usr/bin/env bash
# Build and check ctensor on a GPU machine, stage by stage, keeping each stage's output.
#
#   bash bench/gpu_run.sh STAGE... [-o OUTDIR]
#
# Stages (in the order they are best run; see bench/README.md, "How to run on a GPU machine"):
#   build      configure and build build-gpu (CUDA on, sm_90) with the packages of .device/
#   test       every CTest suite, the GPU ones included (they must not report themselves skipped)
#   bench      ctbench --device cuda (all sections) and compare_torch.py --device cuda next to it
#   examples   the main job on the GPU (its defaults: 10 epochs, >= 92%), then the transfer-learning
#              example from its checkpoint, and the ResNet example for one epoch
#   memcheck   every GPU suite under compute-sanitizer --tool memcheck
#   racecheck  every GPU suite under compute-sanitizer --tool racecheck
# Each stage writes at most two files into OUTDIR (default: $OUT when set, else
# bench/results/raw): STAGE.log, plus the JSON Lines of the bench stage; env.txt describes the
# machine and the commit. Exit status: 0 when every stage passed, else that of the last failure.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
stages=()
out=${OUT:-bench/results/raw}
while [ $# -gt 0 ]; do
  case $1 in
    -o) out=$2; shift 2 ;;
    build|test|bench|examples|memcheck|racecheck) stages+=("$1"); shift ;;
    *) echo "gpu_run.sh: unknown stage '$1'" >&2; exit 2 ;;
  esac
done
[ ${#stages[@]} -gt 0 ] || { sed -n '2,16p' "$0"; exit 2; }
mkdir -p "$out"
build="build-gpu"

if [ -f .device/on-device.sh ]; then
  # shellcheck disable=SC1091
  source .device/on-device.sh >/dev/null
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

sanitize() { # tool: every GPU suite under compute-sanitizer, one process per suite
  local tool=$1 rc=0
  for t in $(gpu_suites); do
    echo "--- $tool: $t"
    timeout 900 compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 99 "$t" --jobs 1 -q || rc=$?
  done
  return $rc
}

examples() {
  local rc=0 bin=$build/python_free_examples tmp
  tmp=$(mktemp -d)
  timeout 600 "$bin/fashion_mnist_cnn" --device cuda --min-accuracy 0.92 \
    --checkpoint "$tmp/cnn.safetensors" --metrics "$tmp/cnn.jsonl" || rc=$?
  timeout 300 "$bin/transfer_learning" --device cuda --checkpoint "$tmp/cnn.safetensors" || rc=$?
  timeout 600 "$bin/resnet_fashion_mnist" --device cuda --epochs 1 --checkpoint "$tmp/resnet.safetensors" || rc=$?
  rm -rf "$tmp"
  return $rc
}

for stage in "${stages[@]}"; do
  case $stage in
    build)
      run_stage build bash -c "cmake -B $build -G Ninja -DCT_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build $build -j $(nproc)" ;;
    test)
      run_stage test ctest --test-dir "$build" --output-on-failure -j 4 ;;
    bench)
      run_stage bench bash -c "$build/bench/ctbench --device cuda --json $out/ctbench-cuda.jsonl && \
        python3 bench/compare_torch.py --device cuda --ctbench $build/bench/ctbench --json $out/torch-cuda.jsonl" ;;
    examples)
      run_stage examples examples ;;
    memcheck)
      run_stage memcheck sanitize memcheck ;;
    racecheck)
      run_stage racecheck sanitize racecheck ;;
  esac
done
exit $status
