#!/usr/bin/env bash
# `make test`'s tests, every one (slow ones included), in three pytest sessions:
#  - the SLURM tests (-m slurm) run beside the others, in the background: most of their time is spent waiting on
#    SLURM (time limits are whole minutes, checked every 30 s; accounting lags), not on the CPU. Their output is
#    printed once the others are done.
#  - every other test, in the foreground.
#  - Hydra's own launcher/sweeper suites last, in a fresh process (they register their own plugins).
# The exit status is the first failing session's.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTEST=(.venv/bin/pytest -W error)
slurm_log=$(mktemp -t explaunch-slurm-tests.XXXXXX)
"${PYTEST[@]}" -p no:cacheprovider -m "slurm and not hydra_suites" >"$slurm_log" 2>&1 &
slurm_pid=$!
# a Ctrl-C or an end here also ends the background session (SIGINT: pytest still runs its teardown, down.sh)
trap 'kill -INT "$slurm_pid" 2>/dev/null; wait "$slurm_pid" 2>/dev/null; rm -f "$slurm_log"' EXIT
trap 'exit 130' INT TERM
"${PYTEST[@]}" -m "not slurm and not hydra_suites"
others=$?
wait "$slurm_pid"
slurm=$?
echo "================ the SLURM tests (-m slurm), run beside the others ================"
cat "$slurm_log"
"${PYTEST[@]}" -m hydra_suites
suites=$?
for status in "$others" "$slurm" "$suites"; do
  [ "$status" -eq 0 ] || exit "$status"
done
