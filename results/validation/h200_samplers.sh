#!/bin/bash
# vLLM's own sampler tests on an H200 under `native` and the corrected profiles (docs/validation.md,
# section 7). Prepared, not yet run on a GPU. From the repository root:
#
#   bash results/validation/h200_samplers.sh tree VLLM_CHECKOUT  # build machine: writes .upstream/
#   bash results/validation/h200_samplers.sh call1   # node, carry .bundle/vllm-0.21.0 .upstream
#   bash results/validation/h200_samplers.sh call2   # same node at once, carry .bundle/vllm-0.22.0 .upstream
#
# `tree` writes .upstream/vllm.git, a small bare repository of upstream's tests/ and pyproject.toml:
# commit 1 (tag pr43023-base) at 9aaf83ef, commit 2 (tag pr43023-head) the same with PR #43023's
# test half (the PR's tests/ diff, 6a4723a2e^..6a4723a2e) applied; and pr43023-base's tree as
# .upstream/tests-pr43023-base.tar.xz for a node without git (then no PR comparison). 6 MiB.
# Each call stops its runs in time to pack them into $OUT/<call>.tar.gz (under 600 s in all).
set -u -o pipefail
OUT=${OUT:-/tmp/validation-out}
RES=/tmp/validation                      # run directories
SRC=/tmp/vllm-src                        # the test tree, from the carried .upstream (`tree`)
BASE_SHA=9aaf83ef502fc37bc647f6e474314d48ba36cd1c
PR_SHA=6a4723a2e0d808ce33bfe378f761e585a7685d58
LIMIT=${LIMIT:-560}                      # seconds of this call's command, packing included
export PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0

stage() { echo "=== $(date +%T) +${SECONDS}s $*"; }
left() { echo $((LIMIT - SECONDS - 25)); }  # keep 25 s to pack

tree() {  # on a machine with a vLLM checkout (or clone) that has both commits
    local from=${1:?usage: $0 tree VLLM_CHECKOUT} tmp
    [ -e .upstream ] && { echo ".upstream exists; remove it first" >&2; exit 2; }
    tmp=$(mktemp -d) && git -C "$tmp" init -q && git -C "$tmp" config user.name harness &&
        git -C "$tmp" config user.email harness@localhost || exit 3
    git -C "$from" archive --format=tar "$BASE_SHA" tests pyproject.toml | tar -x -C "$tmp" || exit 3
    git -C "$tmp" add -A && git -C "$tmp" commit -qm "upstream tests/ at ${BASE_SHA:0:9}" &&
        git -C "$tmp" tag pr43023-base || exit 3
    git -C "$from" diff "$PR_SHA^" "$PR_SHA" -- tests | git -C "$tmp" apply --index || exit 3
    git -C "$tmp" commit -qm "PR #43023's test half (${PR_SHA:0:9}, tests/ only)" &&
        git -C "$tmp" tag pr43023-head || exit 3
    mkdir -p .upstream && git clone -q --bare "$tmp" .upstream/vllm.git && git -C .upstream/vllm.git gc -q &&
        git -C "$tmp" archive --format=tar pr43023-base | xz -9 > .upstream/tests-pr43023-base.tar.xz || exit 3
    rm -rf "$tmp"
    git -C .upstream/vllm.git log --oneline --decorate --all; du -sh .upstream/*
}

install_021() {
    stage "install vLLM 0.21.0"
    python3 harness/bundle/install.py install .bundle/vllm-0.21.0 --target /tmp/vllm-0.21.0
}

install_022() {  # the delta over the 0.21.0 install call1 left (the node must still be warm)
    stage "install vLLM 0.22.0 (delta)"
    python3 harness/bundle/install.py install .bundle/vllm-0.22.0 --base-target /tmp/vllm-0.21.0 --target /tmp/vllm-0.22.0
}

wrappers() {  # one interpreter per installed release (the PR scenario's `python:`)
    for v in 0.21.0 0.22.0; do
        printf '#!/bin/sh\nPYTHONPATH=/tmp/vllm-%s exec python3 "$@"\n' "$v" > /tmp/python-vllm-$v
        chmod +x /tmp/python-vllm-$v
    done
}

setup() {  # what both calls need: the device, the tree, the tiny model
    stage device
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c 'import sys, torch, pytest; print("python", sys.version.split()[0], "torch", torch.__version__, "pytest", pytest.__version__)'
    [ -f .upstream/tests-pr43023-base.tar.xz ] || { echo "no .upstream: build it (\`$0 tree\`) and carry it" >&2; exit 2; }
    if [ ! -d "$SRC" ]; then  # a clone (at pr43023-base) where git is; else the exported tree, no refs
        if git --version; then git clone -q .upstream/vllm.git "$SRC" && git -C "$SRC" checkout -q pr43023-base || exit 3
        else echo "git: not found; the PR comparison (refs) cannot run"; mkdir -p "$SRC" && tar -xJf .upstream/tests-pr43023-base.tar.xz -C "$SRC" || exit 3
        fi
    fi
    stage "tiny model"; MODEL=$(python3 -m harness.run.tinymodel | tail -1) || exit 3; echo "$MODEL"
    mkdir -p "$OUT" "$RES"
}

# profiles VERSION VARIANT... : one run of h200_samplers_profiles over those variants, in time
profiles() {
    local v=$1 t; shift
    t=$(left); [ "$t" -gt 60 ] || { echo "skipped (time): $*"; return; }
    stage "h200_samplers_profiles on $v: $* (timeout ${t}s)"
    PYTHONPATH=/tmp/vllm-$v timeout "$t" python3 run.py scenarios/h200_samplers_profiles.yaml \
        --strict-platform --vllm-src "$SRC" --model "$MODEL" --out "$RES/$v" ${*/#/--variant }
    echo "run.py exit: $?"
}

pack() { tar czf "$OUT/$1.tar.gz" -C "$RES" .; ls -l "$OUT/$1.tar.gz"; }

# The groups, most telling first (one run directory each; a group that no longer fits is skipped,
# one cut short keeps the variants it finished: `run.py report` rebuilds its report). Expected on an
# H200 (from the H100's figures: worker start ~20 s, a first construction ~33 s, a later one ~17 s,
# a failed one ~3 s, a wait 10 s): A ~245 s, B ~275 s, PR ~280 s, B2 ~205 s.
A="legacy_lazy fixed_lazy settle_lazy"                         # child process, slow release
B="native_inproc bare_inproc legacy_inproc_lazy fixed_inproc_lazy"  # in-process: the engine half
B2="bare_inproc legacy_inproc_lazy fixed_inproc_lazy"          # 0.22.0: pr_head_inproc is its native_inproc
REST="native bare_lazy legacy fixed settle"                    # if time is left

call1() {
    setup
    install_021 || exit 3
    profiles 0.21.0 $A
    profiles 0.21.0 $B
    profiles 0.21.0 $REST
    pack call1
}

call2() {
    setup
    [ -d /tmp/vllm-0.21.0 ] || { echo "no /tmp/vllm-0.21.0: call2 must follow call1 on the same node" >&2; exit 3; }
    install_022 || exit 3
    wrappers
    git --version >/dev/null 2>&1 || { echo "skipped: the PR comparison needs git on the node"; profiles 0.22.0 $B; profiles 0.22.0 $A; pack call2; return; }
    stage "PR #43023: base (0.21.0, pr43023-base) vs head (0.22.0, pr43023-head), native"
    PYTHONPATH=/tmp/vllm-0.22.0 VLLM_SRC=$SRC PR43023_BASE=pr43023-base PR43023_HEAD=pr43023-head \
        timeout $(left) python3 run.py scenarios/h200_pr43023_samplers.yaml --strict-platform \
        --model "$MODEL" --out "$RES/pr43023"
    echo "run.py exit: $?"
    profiles 0.22.0 $B2
    profiles 0.22.0 $A
    pack call2
}

case "${1:-}" in
    tree) tree "${@:2}" ;;
    call1|call2) "$1" ;;
    *) echo "usage: $0 tree VLLM_CHECKOUT | call1 | call2" >&2; exit 2 ;;
esac
stage done
