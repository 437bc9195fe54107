#!/usr/bin/env bash
# The verdict step of ci/buildkite/nightly-amd.yml: join the shards of $GPU's run, annotate the build
# with report.md, upload report.html (and the whole run directory) and the nightly trend, then exit
# with the run's code (0 the verdict holds and nothing failed that was not allowed; 1 the verdict
# fails, the baseline is broken, or a step failed for a reason not allowed; 2 bad input;
# 3 infrastructure).
set -uo pipefail

: "${GPU:?set GPU (mi250 or mi300) in the env of the step}"
SCENARIO=${SCENARIO:-scenarios/sampler_mi250.yaml}
NAME=$(basename "$SCENARIO" .yaml)
export HARNESS_HISTORY="${HARNESS_HISTORY_DIR:-results}/history-$GPU.jsonl"

python -m pip install -q -e . || exit 3
buildkite-agent artifact download "results/$GPU/**/*" . --step "$GPU-shards" || exit 3

status=0
python run.py merge results/"$GPU"/"$NAME"/* --out "merged/$GPU" || status=$?

run_dir=$(ls -d "merged/$GPU/$NAME"/*/ 2>/dev/null | sort | tail -n 1)
if [ -n "$run_dir" ] && [ -f "${run_dir}report.md" ]; then
    style=success
    [ "$status" -eq 0 ] || style=error
    buildkite-agent annotate --style "$style" --context "teardown-harness-$GPU" < "${run_dir}report.md"
    buildkite-agent artifact upload "${run_dir}report.html"
    buildkite-agent artifact upload "${run_dir}**/*"
else
    echo "**$NAME on $GPU**: the shards could not be merged (exit $status); see the step's log." \
        | buildkite-agent annotate --style error --context "teardown-harness-$GPU"
    [ "$status" -ne 0 ] || status=3
fi

# The trend is informative: it never changes the step's outcome.
if python run.py trend "$NAME" --nights 14 --html "merged/$GPU/trend.html" --out "merged/$GPU"; then
    buildkite-agent artifact upload "merged/$GPU/trend.html" || true
fi
exit "$status"
