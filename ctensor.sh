#!/usr/bin/env bash
# ctensor's one entry point for people and CI.
#
#   ./ctensor.sh run [ARGS]     install what is missing, build, train the Fashion-MNIST CNN
#                               (on the GPU if there is one, else on the CPU; ARGS go to it)
#   ./ctensor.sh test           install what is missing, build, run the whole test suite
#   ./ctensor.sh test-sanitize  build the CPU library with ASan+UBSan and run the suite
#   ./ctensor.sh test-emu       build the CUDA backend on the CUDA emulator (tests/emu: the
#                               hand-written kernels run on the CPU) with ASan+UBSan and run
#                               the GPU suites against it; no GPU needed
#   ./ctensor.sh setup | build  the first steps alone
#
# Environment: BUILD_DIR (default build), CT_CUDA (AUTO|ON|OFF, default AUTO: on when nvcc
# exists), JOBS (default: number of cores), SKIP_SETUP=1 to skip the apt step. Outputs of the
# main job (checkpoint, metrics) go to the current directory.
set -euo pipefail
cd "$(dirname "$0")"

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
CT_CUDA=${CT_CUDA:-AUTO}
PACKAGES=(build-essential cmake ninja-build pkg-config libcriterion-dev libopenblas-openmp-dev zlib1g-dev
          libopenmpi-dev openmpi-bin dataset-fashion-mnist)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

setup() {
    [ "${SKIP_SETUP:-0}" = 1 ] && return 0
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # The CUDA toolkit is optional; put nvcc on PATH when it is installed in the usual place.
    if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
        export PATH=/usr/local/cuda/bin:$PATH
    fi
}

build() {
    local dir=$1; shift
    log "configuring $dir ($*)"
    cmake -S . -B "$dir" -G Ninja -DCT_CUDA="$CT_CUDA" "$@" >"$dir.configure.log" 2>&1 \
        || { cat "$dir.configure.log"; exit 1; }
    grep -E "ctensor:" "$dir.configure.log" || true
    log "building $dir"
    cmake --build "$dir" --parallel "$JOBS"
}

# run_tests DIR [CTEST ARGS]
run_tests() {
    local dir=$1; shift
    log "testing $dir"
    (cd "$dir" && ctest --output-on-failure --parallel "$JOBS" --timeout 900 "$@")
}
# The sanitizers' settings for the ASan+UBSan builds' runs.
sanitized() { ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 "$@"; }

case "${1:-run}" in
setup) setup ;;
build) setup; mkdir -p "$BUILD_DIR"; build "$BUILD_DIR" ;;
run)
    setup; mkdir -p "$BUILD_DIR"; build "$BUILD_DIR"
    shift || true
    log "main job: training the Fashion-MNIST CNN"
    "$BUILD_DIR/python_free_examples/fashion_mnist_cnn" "$@"
    ;;
test)
    setup; mkdir -p "$BUILD_DIR"; build "$BUILD_DIR"
    run_tests "$BUILD_DIR"
    log "examples"
    "$BUILD_DIR/python_free_examples/quickstart" >/dev/null 2>&1
    "$BUILD_DIR/python_free_examples/linear_regression" >/dev/null
    "$BUILD_DIR/python_free_examples/xor_mlp" >/dev/null
    log "install and use from a downstream CMake project and via pkg-config"
    prefix=$(mktemp -d)
    cmake --install "$BUILD_DIR" --prefix "$prefix" >/dev/null
    cmake -S tests/install -B "$prefix/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
    cmake --build "$prefix/consumer" >/dev/null
    LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" "$prefix/consumer/consumer"
    PKG_CONFIG_PATH="$prefix/lib/pkgconfig" cc tests/install/main.c -o "$prefix/pc-consumer" \
        $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs ctensor)
    LD_LIBRARY_PATH="$prefix/lib:${LD_LIBRARY_PATH:-}" "$prefix/pc-consumer"
    rm -rf "$prefix"
    "$BUILD_DIR/bench/ctbench" --quick >/dev/null 2>&1 || { "$BUILD_DIR/bench/ctbench" --quick; exit 1; }
    ;;
test-sanitize)
    setup; dir=${BUILD_DIR}-sanitize; mkdir -p "$dir"
    CT_CUDA=OFF build "$dir" -DCT_SANITIZE=ON -DCT_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
    sanitized run_tests "$dir"
    ;;
test-emu)
    setup; dir=${BUILD_DIR}-emu; mkdir -p "$dir"
    build "$dir" -DCT_CUDA_EMU=ON -DCT_SANITIZE=ON -DCT_BUILD_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
    sanitized run_tests "$dir" -R '^test_cuda' # the GPU suites, on the emulator
    log "test_cuda_stream's two-device tests, on two emulated devices"
    CT_EMU_DEVICES=2 sanitized "$dir/tests/test_cuda_stream" --filter 'cuda_stream/*devices*'
    ;;
*) echo "usage: $0 [run|test|test-sanitize|test-emu|setup|build]" >&2; exit 2 ;;
esac
