#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, with SLURM's own accounting, for trying explaunch on SLURM and for
# its tests. Installs Debian's slurmctld, slurmd, slurm-client, munge, slurmdbd and mariadb-server when missing,
# writes slurm.conf, cgroup.conf and slurmdbd.conf for this machine under .slurm/etc, and starts without systemd:
# munged, a private MariaDB (data, socket, pid and log under .slurm/mysql, port 3307 on 127.0.0.1), slurmdbd,
# slurmctld and slurmd; then waits until the node is idle. `sacct` is SLURM's own (jobs end COMPLETED, FAILED,
# TIMEOUT, CANCELLED, OUT_OF_MEMORY: a job's memory is enforced with cgroups). Idempotent: a second run starts nothing
# that already runs (a daemon whose configuration changed is restarted). Needs root. It never replaces a SLURM
# configuration it did not write (/etc/slurm/slurm.conf must be absent or its own symlink). `down.sh` stops exactly
# what this started.
#   scripts/slurm/up.sh           (or: make slurm-up)
set -euo pipefail
source "$(dirname "$0")/common.sh"
PARTITION=${EXPLAUNCH_SLURM_PARTITION:-debug}
CLUSTER=explaunch
DB=$BASE/mysql  # MariaDB's own folder: data/, socket, pid file, log
PASSFILE=$BASE/etc/db.pass
say() { echo "[slurm-up] $*"; }
die() { echo "[slurm-up] error: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (munge and the SLURM daemons)"
ours || die "$ETC_CONF is not this script's (a file, or a link elsewhere): refusing to replace that SLURM configuration"
mkdir -p "$BASE"/{etc,state,spool,log,run}
touch "$PIDS"
remember() { sed -i "/^$1 /d" "$PIDS"; echo "$1 $2" >>"$PIDS"; }
# put FILE MODE < content: write FILE (atomically, created with MODE) when its content differs; true when it did
put() {
  local tmp
  tmp=$(mktemp "$1.XXXXXX")
  chmod "$2" "$tmp"
  cat >"$tmp"
  if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$1"
}
# changed NAME...: a configuration of these running daemons changed: stop them here, so that they start again below
changed() {
  local name
  for name in "$@"; do
    running "$name" >/dev/null && { say "$name: its configuration changed, restarting it"; stop "$name" 30 >/dev/null; }
  done
  return 0
}

# 1. packages
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v sbatch >/dev/null \
   || ! command -v munged >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  say "installing slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge slurmdbd mariadb-server >/dev/null
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
munge -n | unmunge >/dev/null || die "munge self-test failed"

# 3. configuration for this machine (CPUs and memory from slurmd -C; memory at 95% so the node never drains)
read -r CPUS SOCKETS CORES THREADS MEMORY < <(slurmd -C | awk '/^NodeName/ {
  for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"] }')
MEMORY=$((MEMORY * 95 / 100))
if put "$SLURM_CONF" 644 <<CONF; then changed slurmd slurmctld; fi
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# memory is enforced (cgroup.conf): a job over its --mem ends OUT_OF_MEMORY
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((MEMORY / CPUS))
# accounting through slurmdbd: sacct is SLURM's own
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=1
JobCompType=jobcomp/none
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
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$MEMORY State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
if put "$BASE/etc/cgroup.conf" 644 <<CONF; then changed slurmd; fi
CgroupAutomount=no
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
AllowedRAMSpace=100
AllowedSwapSpace=0
CONF
[ -s "$PASSFILE" ] || (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$PASSFILE")
chmod 600 "$PASSFILE"
if put "$BASE/etc/slurmdbd.conf" 600 <<CONF; then changed slurmdbd; fi
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3307
StorageUser=slurm
StoragePass=$(cat "$PASSFILE")
StorageLoc=slurm_acct_db
LogFile=$BASE/log/slurmdbd.log
PidFile=$BASE/run/slurmdbd.pid
CONF
if put "$MYCNF" 644 <<CONF; then changed slurmdbd mariadbd; fi
[mariadbd]
user=root
datadir=$DB/data
socket=$DB/mariadbd.sock
pid-file=$DB/mariadbd.pid
log-error=$DB/mariadb.log
port=3307
bind-address=127.0.0.1
skip-name-resolve
performance_schema=OFF
innodb_buffer_pool_size=64M
[client]
socket=$DB/mariadbd.sock
CONF
mkdir -p /etc/slurm
ln -sfn "$SLURM_CONF" "$ETC_CONF"

# 4. sacct is SLURM's own now: an earlier version's stand-in goes; a /usr/local/bin/sacct of someone else stays
if grep -q "$STANDIN_MARK" /usr/local/bin/sacct 2>/dev/null; then
  rm -f /usr/local/bin/sacct
  say "removed the old sacct stand-in from /usr/local/bin"
elif [ -e /usr/local/bin/sacct ]; then
  echo "[slurm-up] warning: /usr/local/bin/sacct (not ours) hides SLURM's own sacct on PATH" >&2
fi

# 5. MariaDB, private. The database and slurmctld's state go together: with the state gone (job ids restart at 1)
#    old rows of the same ids would collide in sacct, so the database starts afresh too.
if ! running slurmctld >/dev/null && [ ! -e "$BASE/state/job_state" ] && [ -d "$DB/data" ]; then
  say "no slurmctld state (job ids restart at 1): starting the accounting database afresh too"
  stop slurmdbd >/dev/null
  stop mariadbd 30 >/dev/null
  rm -rf "$DB/data"
fi
# It runs as root, like the SLURM daemons here: the mysql user cannot reach a checkout under a private folder (a
# mktemp -d clone is 0700), and this database is the test cluster's alone (127.0.0.1:3307, socket auth for root).
install -d -o root -g root -m 0700 "$DB"
if [ -d "$DB/data" ] && [ "$(stat -c %U "$DB/data")" != root ]; then chown -R root:root "$DB/data"; fi
if [ ! -d "$DB/data/mysql" ]; then
  rm -rf "$DB/data"
  mariadb-install-db --defaults-file="$MYCNF" --user=root --auth-root-authentication-method=socket \
    --skip-test-db >"$BASE/log/mariadb-install.log" 2>&1 || { tail -5 "$BASE/log/mariadb-install.log" >&2; exit 1; }
fi
if ! running mariadbd >/dev/null; then
  rm -f "$DB/mariadbd.pid"
  setsid -f /usr/sbin/mariadbd --defaults-file="$MYCNF" </dev/null >/dev/null 2>&1
  for _ in $(seq 300); do
    [ -s "$DB/mariadbd.pid" ] && mariadb-admin --defaults-file="$MYCNF" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  [ -s "$DB/mariadbd.pid" ] || { tail -5 "$DB/mariadb.log" >&2; die "mariadbd did not start; see $DB/mariadb.log"; }
  remember mariadbd "$(cat "$DB/mariadbd.pid")"
  say "mariadbd started (pid $(cat "$DB/mariadbd.pid"), 127.0.0.1:3307, data in $DB/data)"
fi

# 6. daemons (each writes its pid file under $BASE/run, as its configuration says)
start_daemon() {
  local name=$1 pidfile=$BASE/run/$1.pid
  running "$name" >/dev/null && return 0
  rm -f "$pidfile"
  "$name" || { tail -5 "$BASE/log/$name.log" >&2; exit 1; }
  for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
  remember "$name" "$(cat "$pidfile")"
  say "$name started (pid $(cat "$pidfile"))"
}
if ! running slurmdbd >/dev/null; then
  # slurmdbd's database user, with the password of slurmdbd.conf (as root over the socket; the password goes by stdin)
  mariadb --defaults-file="$MYCNF" -u root <<SQL
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$PASSFILE")';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$(cat "$PASSFILE")';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
  start_daemon slurmdbd
fi
for _ in $(seq 100); do sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1 && break; sleep 0.2; done
if ! sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
  sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr could not add cluster $CLUSTER; see $BASE/log/slurmdbd.log"
  say "cluster $CLUSTER registered in the accounting database"
fi
start_daemon slurmctld
start_daemon slurmd

# 7. wait until the node takes jobs
for _ in $(seq 60); do
  state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$state" in
    idle* | mixed* | allocated*) say "node $NODE is $state, partition $PARTITION, $CPUS CPUs, accounting by slurmdbd"; exit 0 ;;
    down* | drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 1
done
die "node $NODE did not become idle; see $BASE/log/"
