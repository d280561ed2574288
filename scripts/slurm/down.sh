#!/usr/bin/env bash
# Stops what scripts/slurm/up.sh started, and only that: cancels the jobs of this cluster (asked through its own
# slurm.conf), stops the PIDs up.sh recorded (slurmd, slurmctld, slurmdbd, mariadbd, munged if it started it),
# removes the empty cgroups slurmd leaves behind and the /etc/slurm/slurm.conf link up.sh made.
# The accounting database and slurmctld's state are both kept (job ids go on; sacct keeps the history): they belong
# together, as a database kept beside a wiped state would see job ids again from 1.
set -uo pipefail
source "$(dirname "$0")/common.sh"
say() { echo "[slurm-down] $*"; }
[ "$(id -u)" -eq 0 ] || { echo "[slurm-down] error: needs root" >&2; exit 1; }
if [ -s "$PIDS" ]; then
  if running slurmctld >/dev/null; then  # squeue/scancel of this cluster: SLURM_CONF is ours (common.sh)
    jobs=$(squeue -h -o %A 2>/dev/null)
    if [ -n "$jobs" ]; then
      echo "$jobs" | xargs -r scancel
      say "cancelled $(echo "$jobs" | wc -l) job(s) of this cluster"
      for _ in $(seq 30); do [ -z "$(squeue -h -t PENDING,RUNNING,COMPLETING -o %A 2>/dev/null)" ] && break; sleep 0.5; done
    fi
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
