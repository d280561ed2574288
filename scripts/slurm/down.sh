#!/usr/bin/env bash
# Stops what scripts/slurm/up.sh started, and only that: cancels the jobs our tests submitted to this cluster (see
# tests_jobs below; any other job is left as it is), stops the PIDs up.sh recorded (slurmd, slurmctld, slurmdbd,
# mariadbd, munged if it started it), removes the empty cgroups slurmd leaves behind and the /etc/slurm/slurm.conf
# link up.sh made.
# The accounting database and slurmctld's state are both kept (job ids go on; sacct keeps the history): they belong
# together, as a database kept beside a wiped state would see job ids again from 1.
set -uo pipefail
source "$(dirname "$0")/common.sh"
say() { echo "[slurm-down] $*"; }
[ "$(id -u)" -eq 0 ] || { echo "[slurm-down] error: needs root" >&2; exit 1; }
# tests_jobs [STATES]: ids of this cluster's jobs our tests submitted: this user's, run from a folder under pytest's
# temporary root (every SLURM test runs its sweeps from its tmp_path; submitit's jobs and a detached sweep's
# controller run where they were submitted). squeue/scancel reach this cluster only: SLURM_CONF is ours (common.sh).
TESTS_ROOT=$(realpath -m "${PYTEST_DEBUG_TEMPROOT:-${TMPDIR:-/tmp}}")/pytest-of-$(id -un)/
tests_jobs() {
  squeue -h -u "$(id -un)" ${1:+-t "$1"} -o '%A %Z' 2>/dev/null \
    | awk -v root="$TESTS_ROOT" 'index($2 "/", root) == 1 {print $1}' | sort -u
}
if [ -s "$PIDS" ]; then
  if running slurmctld >/dev/null; then
    jobs=$(tests_jobs)
    others=$(squeue -h -o %A 2>/dev/null | sort -u | grep -cvxF -e "$jobs")
    [ "$others" -eq 0 ] || say "left $others job(s) the tests did not submit as they are (kept in this cluster's state)"
    if [ -n "$jobs" ]; then
      echo "$jobs" | xargs -r scancel
      say "cancelled $(echo "$jobs" | wc -l) job(s) the tests submitted"
      for _ in $(seq 30); do [ -z "$(tests_jobs PENDING,RUNNING,COMPLETING)" ] && break; sleep 0.5; done
    fi
    # any job still COMPLETING has ended and only reports it: its slurmstepd waits for slurmd, and would be left
    # behind (for good) were slurmd stopped first
    for i in $(seq 60); do
      [ -z "$(squeue -h -t COMPLETING -o %A 2>/dev/null)" ] && break
      [ "$i" -eq 1 ] && say "waiting (up to 30 s) for the jobs still completing"
      sleep 0.5
    done
  fi
  for name in slurmd slurmctld slurmdbd mariadbd munged; do  # the reverse of the start order
    stop "$name" 30 | sed 's/^\[slurm\]/[slurm-down]/'
  done
  : >"$PIDS"
else
  say "nothing started by up.sh is recorded"
fi
# empty cgroups slurmd made (slurm_<node>/uid_*/job_*/...): deepest first; a cgroup still in use stays
for top in /sys/fs/cgroup/*/slurm_"$NODE" /sys/fs/cgroup/*/slurm; do
  [ -d "$top" ] && find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null
done
if [ -L "$ETC_CONF" ] && [ "$(readlink "$ETC_CONF")" = "$SLURM_CONF" ]; then rm -f "$ETC_CONF"; fi
if grep -q "$STANDIN_MARK" /usr/local/bin/sacct 2>/dev/null; then rm -f /usr/local/bin/sacct; fi
exit 0
