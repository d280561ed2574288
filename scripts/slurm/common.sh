# Shared by up.sh and down.sh (sourced, not run): where the cluster lives and how its recorded processes are found.
BASE=${EXPLAUNCH_SLURM_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.slurm}
PIDS=$BASE/pids
NODE=$(hostname -s)
ETC_CONF=/etc/slurm/slurm.conf  # where Debian's SLURM tools look: a symlink to $BASE/etc/slurm.conf while it runs
STANDIN_MARK="explaunch sacct stand-in"  # what an older up.sh wrote into /usr/local/bin/sacct
MYCNF=$BASE/etc/my.cnf
export SLURM_CONF=$BASE/etc/slurm.conf  # the daemons read slurmdbd.conf and cgroup.conf beside it

# running NAME: the pid recorded for NAME, if that process still runs that program
running() {
  local pid
  [ -f "$PIDS" ] || return 1
  pid=$(awk -v n="$1" '$1 == n {p = $2} END {print p}' "$PIDS")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qx "$1" "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}

# stop NAME [WAIT_S]: TERM the recorded NAME, KILL it after WAIT_S (10) seconds; forget it
stop() {
  local pid
  if pid=$(running "$1"); then
    kill -TERM "$pid"
    for _ in $(seq $((${2:-10} * 10))); do [ -d "/proc/$pid" ] || break; sleep 0.1; done
    [ -d "/proc/$pid" ] && kill -KILL "$pid"
    echo "[slurm] $1 (pid $pid) stopped"
  fi
  [ -f "$PIDS" ] && sed -i "/^$1 /d" "$PIDS"
  return 0
}

# ours: /etc/slurm/slurm.conf is absent, a symlink into $BASE (what up.sh makes), or a symlink an up.sh of another
# checkout left (.../.slurm/etc/slurm.conf) while no slurmctld runs on this machine: that cluster is down (its
# checkout may be gone), so its link configures nothing; a running cluster of another checkout is never taken over
ours() {
  [ ! -e "$ETC_CONF" ] && [ ! -L "$ETC_CONF" ] && return 0
  [ -L "$ETC_CONF" ] || return 1
  case "$(readlink "$ETC_CONF")" in
    "$BASE"/*) return 0 ;;
    */.slurm/etc/slurm.conf) ! pgrep -x slurmctld >/dev/null ;;
    *) return 1 ;;
  esac
}
