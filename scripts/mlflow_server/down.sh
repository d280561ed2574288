#!/usr/bin/env bash
# Stops what up.sh started: the mlflow server (its whole session: workers too) and PostgreSQL. The data stays.
#   scripts/mlflow_server/down.sh    (or: make mlflow-server-down)
set -euo pipefail
source "$(dirname "$0")/common.sh"
if pid=$(mlflow_running); then
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
  echo "[mlflow-server] mlflow server (pid $pid) stopped"
fi
rm -f "$MLFLOW_PID" "$MLFLOW_MODE"
BIN=$(pg_bin)
if [ -n "$BIN" ] && [ -s "$PGDATA/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
  echo "[mlflow-server] PostgreSQL stopped"
fi
