#!/usr/bin/env bash
# The GPU check on a lent GPU machine (docs/gpu-check.md): onnxruntime-gpu travels in chunks of
# at most 53 MB (.gpu1 .. .gpuN), the Python packages the machine lacks as wheels (.whl).
#
#   here, once:      bash benchmarks/gpu_check.sh prepare
#   there, N-1 x:    bash benchmarks/gpu_check.sh chunk          (carry: the next .gpuK; .whl with one of them)
#   there, last:     bash benchmarks/gpu_check.sh run [ARGS...]  (carry: .gpuN; ARGS go to gpu_check)
#
# Each step copies every .gpu*/part.* it finds (parts have distinct names, so a folder left from an
# earlier call does no harm) into /tmp/ortx; `run` checks the whole archive against its checksum,
# unpacks it, installs the wheels and this package into /tmp/site and runs the check into $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-}; shift || true

wheels() {  # what the machine's image lacks for training (its list: ../shared/device/README.md)
  local dest=.whl platform=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
                            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
  mkdir -p "$dest"
  grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platform[@]}" -d "$dest" \
    monai==1.6.1 albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 \
    annotated-types==0.8.0 typing-inspection==0.4.5 stringzilla==5.3.2 simsimd==6.5.16 \
    iterative-stratification==0.1.9 numba-cuda==0.30.4
  du -sh "$dest"
}

collect() {
  mkdir -p /tmp/ortx
  local found=0
  for dir in .gpu[0-9]*; do
    [ -d "$dir" ] || continue
    cp "$dir"/part.* /tmp/ortx/
    found=1
    if [ -f "$dir/ort.md5" ]; then cp "$dir/ort.md5" /tmp/ortx/; fi
  done
  [ "$found" = 1 ] || { echo "gpu_check.sh: no .gpuK folder came along (name it in carry)" >&2; exit 2; }
  ls /tmp/ortx
}

install_wheels() {  # wherever .whl came along (it fits beside the smallest chunk, see docs/gpu-check.md)
  if compgen -G ".whl/*.whl" > /dev/null; then
    mkdir -p /tmp/site
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
    echo "wheels installed into /tmp/site"
  fi
}

case "$step" in
  prepare)
    ORT_VERSION=${ORT_VERSION:-1.31.1} ../shared/device/ort-gpu-chunks.sh
    wheels
    ;;
  chunk)
    collect
    install_wheels
    ;;
  run)
    collect
    if [ -f /tmp/ortx/ort.md5 ]; then
      got=$(cat /tmp/ortx/part.* | md5sum | cut -d' ' -f1)
      [ "$got" = "$(cat /tmp/ortx/ort.md5)" ] || { echo "gpu_check.sh: chunks missing or damaged" >&2; exit 2; }
    fi
    rm -rf /tmp/ortsite && mkdir -p /tmp/ortsite /tmp/site
    cat /tmp/ortx/part.* | xz -d -T8 | tar x -C /tmp/ortsite
    install_wheels
    export PYTHONPATH=/tmp/ortsite:/tmp/site PYTHONUNBUFFERED=1
    python3 -m pip install -q --no-deps --no-build-isolation --target /tmp/site .
    python3 -c "import onnxruntime as o; o.preload_dlls(); print('onnxruntime', o.__version__, o.get_available_providers())"
    python3 -c "from numba import cuda; print('numba.cuda available:', cuda.is_available())" || true
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv || true
    python3 -m usseg.benchmarks.gpu_check --out "${OUT:-gpu-check}" --budget 450 "$@"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_check.sh prepare | chunk | run [gpu_check arguments]" >&2
    exit 2
    ;;
esac
