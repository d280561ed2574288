#!/usr/bin/env bash
# Stops what scripts/slurm/up.sh started, and only that: the PIDs it recorded, after cancelling remaining jobs.
set -uo pipefail
BASE=${EXPLAUNCH_SLURM_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/.slurm}
PIDS=$BASE/pids
say() { echo "[slurm-down] $*"; }
[ -s "$PIDS" ] || { say "nothing started by up.sh is recorded"; exit 0; }
if command -v squeue >/dev/null && [ -n "$(squeue -h -o %A 2>/dev/null)" ]; then
  squeue -h -o %A | xargs -r scancel
  for _ in $(seq 30); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
fi
tac "$PIDS" | while read -r name pid; do  # slurmd, slurmctld, munged: the reverse of the start order
  if [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qx "$name" "/proc/$pid/comm" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid"
    say "$name (pid $pid) stopped"
  fi
done
: >"$PIDS"
if grep -q "explaunch sacct stand-in" /usr/local/bin/sacct 2>/dev/null; then rm -f /usr/local/bin/sacct; fi
exit 0
