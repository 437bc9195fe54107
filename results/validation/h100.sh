#!/bin/bash
# The commands behind docs/validation.md, as they ran on the H100 (the installer then was
# harness/bundle.py; it is harness/bundle/install.py now, same command line), from the repository root:
#
#   bash results/validation/h100.sh call1   # with .bundle/vllm-0.21.0 carried: install, smoke test, h100_inproc
#   bash results/validation/h100.sh call2   # right after, on the same node: h100_lazy_release on 0.21.0
#   bash results/validation/h100.sh call3   # with .bundle/vllm-0.22.0 carried, right after: delta install, bisect
#
# On a node that keeps its /tmp, `all` does the three in a row (it needs both bundle directories).
# Each call packs its run directories into $OUT/<call>.tar.gz.
set -u -o pipefail
OUT=${OUT:-/tmp/validation-out}
RES=/tmp/validation                      # run directories
mkdir -p "$OUT" "$RES"
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0

stage() { echo "=== $(date +%T) $*"; }

install_021() {
    stage "install vLLM 0.21.0"
    python3 harness/bundle/install.py install .bundle/vllm-0.21.0 --target /tmp/vllm-0.21.0
}

install_022() {  # a delta over the installed 0.21.0
    stage "install vLLM 0.22.0 (delta)"
    python3 harness/bundle/install.py install .bundle/vllm-0.22.0 --base-target /tmp/vllm-0.21.0 --target /tmp/vllm-0.22.0
}

device() {
    stage device
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
}

smoke() {  # docs/offline-bundle.md: the compacted kernels and FlashAttention 3 load and run
    stage "smoke test vLLM $1"
    PYTHONPATH=/tmp/vllm-$1 timeout 300 python3 -c "
import torch, vllm
from vllm import _custom_ops as ops
from vllm.vllm_flash_attn import flash_attn_varlen_func
from vllm.vllm_flash_attn.flash_attn_interface import FA3_AVAILABLE, FA3_UNAVAILABLE_REASON
x = torch.randn(8, 128, device='cuda', dtype=torch.bfloat16); o = torch.empty_like(x)
ops.rms_norm(o, x, torch.ones(128, device='cuda', dtype=torch.bfloat16), 1e-6)
q = torch.randn(16, 8, 128, device='cuda', dtype=torch.bfloat16); cu = torch.tensor([0, 16], device='cuda', dtype=torch.int32)
out = flash_attn_varlen_func(q, q, q, 16, cu, 16, cu, causal=True, fa_version=3)
torch.cuda.synchronize(); print(vllm.__version__, FA3_AVAILABLE, FA3_UNAVAILABLE_REASON, out.shape)"
}

wrappers() {  # one interpreter per installed release, for `bisect --env`
    for v in 0.21.0 0.22.0; do
        printf '#!/bin/sh\nPYTHONPATH=/tmp/vllm-%s exec python3 "$@"\n' "$v" > /tmp/python-vllm-$v
        chmod +x /tmp/python-vllm-$v
    done
}

pack() { tar czf "$OUT/$1.tar.gz" -C "$RES" "${@:2}"; ls -l "$OUT/$1.tar.gz"; }

call1() {
    device
    install_021 || exit 3
    export PYTHONPATH=/tmp/vllm-0.21.0   # vLLM, and the harness's junitparser
    smoke 0.21.0 || exit 3
    stage "tiny model"; python3 -m harness.tinymodel
    stage "h100_inproc on 0.21.0"
    timeout 420 python3 run.py scenarios/h100_inproc.yaml --out "$RES"; echo "run.py exit: $?"
    pack call1 h100_inproc
}

call2() {
    [ -d /tmp/vllm-0.21.0 ] || install_021 || exit 3
    export PYTHONPATH=/tmp/vllm-0.21.0
    stage "h100_lazy_release on 0.21.0"
    timeout 560 python3 run.py scenarios/h100_lazy_release.yaml --out "$RES"; echo "run.py exit: $?"
    pack call2 h100_lazy_release
}

call3() {
    install_022 || exit 3
    wrappers
    export PYTHONPATH=/tmp/vllm-0.21.0   # the harness's own process (junitparser); workers: the wrappers
    stage "bisect h100_shutdown_memory over 0.21.0, 0.22.0"
    timeout 500 python3 run.py bisect scenarios/h100_shutdown_memory.yaml \
        --env 0.21.0=/tmp/python-vllm-0.21.0 --env 0.22.0=/tmp/python-vllm-0.22.0 \
        --find fix --bad 0.21.0 --good 0.22.0 --fail-on "held-after:engine_core_shutdown>5" --out "$RES"
    echo "bisect exit: $?"
    pack call3 bisect
}

case "${1:-}" in
    call1|call2|call3) "$1" ;;
    all) (call1); (call2); (call3) ;;
    *) echo "usage: $0 call1|call2|call3|all" >&2; exit 2 ;;
esac
stage done
