#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for trying explaunch on SLURM and for its tests.
# Installs Debian's slurmctld, slurmd, slurm-client and munge when missing, writes a slurm.conf for this machine,
# starts munged, slurmctld and slurmd without systemd and waits until the node is idle. Idempotent: a second run
# starts nothing that already runs. Needs root (munge and the daemons). `down.sh` stops exactly what this started.
#   scripts/slurm/up.sh           (or: make slurm-up)
set -euo pipefail
BASE=${EXPLAUNCH_SLURM_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/.slurm}
PIDS=$BASE/pids
PARTITION=${EXPLAUNCH_SLURM_PARTITION:-debug}
NODE=$(hostname -s)
say() { echo "[slurm-up] $*"; }
[ "$(id -u)" -eq 0 ] || { echo "[slurm-up] error: needs root (munge and the SLURM daemons)" >&2; exit 1; }
mkdir -p "$BASE"/{etc,state,spool,log,run}
touch "$PIDS"

# running NAME: the pid this script recorded for NAME, if that process still runs that program
running() {
  local pid
  pid=$(awk -v n="$1" '$1 == n {p = $2} END {print p}' "$PIDS")
  [ -n "$pid" ] && [ -d "/proc/$pid" ] && grep -qx "$1" "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}
remember() { sed -i "/^$1 /d" "$PIDS"; echo "$1 $2" >>"$PIDS"; }

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

# 2. munge: key, folders, daemon
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
  || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! running munged >/dev/null; then
  if pgrep -x munged >/dev/null; then
    say "munged already runs (not started by this script): using it"
  else
    rm -f /run/munge/munged.pid /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 50); do [ -s /run/munge/munged.pid ] && break; sleep 0.1; done
    remember munged "$(cat /run/munge/munged.pid)"
    say "munged started (pid $(cat /run/munge/munged.pid))"
  fi
fi
munge -n | unmunge >/dev/null || { echo "[slurm-up] error: munge self-test failed" >&2; exit 1; }

# 3. slurm.conf for this machine (CPUs and memory from slurmd -C; memory at 95% so the node never drains)
read -r CPUS SOCKETS CORES THREADS MEMORY < <(slurmd -C | awk '/^NodeName/ {
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
cat >"$BASE/etc/slurm.conf" <<CONF
ClusterName=explaunch
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
ReturnToService=2
MinJobAge=3600
KillWait=5
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/run/slurmctld.pid
SlurmdPidFile=$BASE/run/slurmd.pid
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$((MEMORY * 95 / 100)) State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
mkdir -p /etc/slurm
ln -sfn "$BASE/etc/slurm.conf" /etc/slurm/slurm.conf  # where Debian's SLURM tools look

# 4. sacct: this cluster has no accounting daemon, so Debian's sacct answers nothing and submitit would poll for
#    job states forever. A stand-in in /usr/local/bin (ahead of /usr/bin on PATH) answers submitit's query from
#    slurmctld's memory (squeue -t all). A /usr/local/bin/sacct that is not ours is left alone.
if [ ! -e /usr/local/bin/sacct ] || grep -q "explaunch sacct stand-in" /usr/local/bin/sacct; then
  cat >/usr/local/bin/sacct <<'SH'
#!/usr/bin/env bash
# explaunch sacct stand-in (written by scripts/slurm/up.sh, removed by down.sh): no slurmdbd on this cluster.
ids=()
while [ $# -gt 0 ]; do
  case "$1" in
    -j | --jobs) ids+=("$2"); shift 2 ;;
    -j*) ids+=("${1#-j}"); shift ;;
    --jobs=*) ids+=("${1#--jobs=}"); shift ;;
    *) shift ;;
  esac
done
echo "JobID|State|NodeList"
for id in "${ids[@]}"; do
  IFS=, read -ra parts <<<"$id"
  for part in "${parts[@]}"; do
    rows=$(squeue -h -t all -o "%i|%T|%N" -j "$part" 2>/dev/null)
    if [ -z "$rows" ] && [[ "$part" =~ ^([0-9]+)_([0-9]+)$ ]]; then
      # an array element cancelled before it started has no record of its own: the array's record tells
      state=$(squeue -h -t all -o "%i|%T|%N" -j "${BASH_REMATCH[1]}" 2>/dev/null | awk -F'|' -v id="${BASH_REMATCH[1]}" '$1 == id {print $2 "|" $3; exit}')
      [ -n "$state" ] && rows="$part|$state"
    fi
    [ -n "$rows" ] && echo "$rows"
  done
done
exit 0
SH
  chmod 755 /usr/local/bin/sacct
fi

# 5. daemons (each writes its pid file under $BASE/run, as slurm.conf says)
start_daemon() {
  local name=$1 pidfile=$BASE/run/$1.pid
  running "$name" >/dev/null && return 0
  rm -f "$pidfile"
  "$name" || { tail -5 "$BASE/log/$name.log" >&2; exit 1; }
  for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
  remember "$name" "$(cat "$pidfile")"
  say "$name started (pid $(cat "$pidfile"))"
}
start_daemon slurmctld
start_daemon slurmd

# 6. wait until the node takes jobs
for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in
    idle* | mixed* | allocated*) say "node $NODE is $state, partition $PARTITION, $CPUS CPUs"; exit 0 ;;
    down* | drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
echo "[slurm-up] error: node $NODE did not become idle; see $BASE/log/" >&2
exit 1
