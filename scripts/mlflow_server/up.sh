#!/usr/bin/env bash
# A shared MLflow tracking server on this machine, as a team would run one: PostgreSQL (Debian's package, its own data
# folder under .mlflow-server/, a generated password kept mode 600) as the backend store and `mlflow server` with
# proxied artifacts (--serve-artifacts, files under .mlflow-server/artifacts), both on loopback only. Installs
# postgresql when missing (root). Idempotent: a second run starts nothing that already runs. `down.sh` stops both; the
# data stays, so runs logged before are there after the next start.
#   scripts/mlflow_server/up.sh      (or: make mlflow-server-up)
# Ports: EXPLAUNCH_PG_PORT (5433), EXPLAUNCH_MLFLOW_PORT (5055); folder: EXPLAUNCH_MLFLOW_SERVER_DIR.
# EXPLAUNCH_MLFLOW_AUTH=1 (make mlflow-server-up AUTH=1): MLflow's basic-auth app in front of it: users and permissions
# in their own sqlite database (.mlflow-server/auth/), an admin user whose generated password is kept in
# .mlflow-server/auth/admin.pass (mode 600); clients give MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD in their
# environment. A server running in the other mode is restarted in the one asked for.
set -euo pipefail
source "$(dirname "$0")/common.sh"
say() { echo "[mlflow-server] $*"; }
die() { echo "[mlflow-server] error: $*" >&2; exit 1; }
MLFLOW=${EXPLAUNCH_MLFLOW_BIN:-$ROOT/.venv/bin/mlflow}
[ -x "$MLFLOW" ] || die "no $MLFLOW: run make setup first"
"$ROOT/.venv/bin/python" -c "import psycopg" 2>/dev/null || die "no psycopg in .venv: run make setup (it installs explaunch[server])"
case "$AUTH" in
  1 | true | yes) AUTH=1 ;;
  0 | false | no | "") AUTH=0 ;;
  *) die "EXPLAUNCH_MLFLOW_AUTH=$AUTH: 1 (basic auth) or 0" ;;
esac
if [ "$AUTH" = 1 ]; then
  "$ROOT/.venv/bin/python" -c "import flask_wtf" 2>/dev/null \
    || die "no Flask-WTF in .venv (MLflow's basic-auth app needs it): run make setup (it installs explaunch[server])"
fi

# 1. PostgreSQL's programs
if [ -z "$(pg_bin)" ]; then
  [ "$(id -u)" -eq 0 ] || die "PostgreSQL is not installed and this is not root: apt-get install postgresql"
  say "installing postgresql"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
BIN=$(pg_bin)

# 2. folders and the password (generated once)
mkdir -p "$BASE" "$ARTIFACTS"
install -d -o "$PG_USER" -m 0700 "$BASE/pg" "$PGSOCK"
[ -d "$PGDATA" ] || install -d -o "$PG_USER" -m 0700 "$PGDATA"
if [ ! -s "$BASE/db.pass" ]; then
  (umask 077; "$ROOT/.venv/bin/python" -c "import secrets; print(secrets.token_hex(16))" >"$BASE/db.pass")
fi
chmod 600 "$BASE/db.pass"
PASS=$(cat "$BASE/db.pass")
(umask 077; echo "127.0.0.1:$PG_PORT:mlflow:mlflow:$PASS" >"$PASSFILE")

# 3. the database cluster: socket-only superuser `postgres` (trust on the private socket), `mlflow` by password on TCP
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  say "initdb $PGDATA"
  as_pg "$BIN/initdb" -D "$PGDATA" -U postgres -E UTF8 --auth-local=trust --auth-host=scram-sha-256 >"$BASE/pg/initdb.log"
fi
if ! as_pg "$BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
  touch "$PGLOG" && chown "$PG_USER" "$PGLOG"
  as_pg "$BIN/pg_ctl" -D "$PGDATA" -l "$PGLOG" -w -t 60 \
    -o "-p $PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1" start >/dev/null \
    || die "PostgreSQL did not start on 127.0.0.1:$PG_PORT (log: $PGLOG): $(tail -1 "$PGLOG")"
  say "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
fi
psql_su() { as_pg "$BIN/psql" -h "$PGSOCK" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname = 'mlflow'")" != 1 ]; then
  psql_su -c "CREATE ROLE mlflow LOGIN" >/dev/null
fi
psql_su >/dev/null <<SQL
ALTER ROLE mlflow PASSWORD '$PASS';
SQL
if [ "$(psql_su -c "SELECT 1 FROM pg_database WHERE datname = 'mlflow'")" != 1 ]; then
  psql_su -c "CREATE DATABASE mlflow OWNER mlflow" >/dev/null
fi

# 4. basic auth (AUTH=1): its config and secrets, generated once, private to this user
secret() { (umask 077; "$ROOT/.venv/bin/python" -c "import secrets; print(secrets.token_urlsafe(24))" >"$1"); }
if [ "$AUTH" = 1 ]; then
  install -d -m 0700 "$AUTH_DIR"
  [ -s "$ADMIN_PASS" ] || secret "$ADMIN_PASS"
  [ -s "$FLASK_SECRET" ] || secret "$FLASK_SECRET"
  chmod 600 "$ADMIN_PASS" "$FLASK_SECRET"
  # admin_password is read when the user database is created (the first start), ignored after
  (umask 077; cat >"$AUTH_INI" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$AUTH_DB
admin_username = $ADMIN_USER
admin_password = $(cat "$ADMIN_PASS")
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
# a checked password is trusted for 60 s by the worker that checked it (its hash costs each request tens of ms);
# a password changed through the API holds on the other workers until then
auth_cache_ttl_seconds = 60
INI
  )
  MODE=basic-auth
else
  MODE=plain
fi

# 5. mlflow server (its own session: down.sh stops its workers with it)
URL=http://127.0.0.1:$MLFLOW_PORT
if pid=$(mlflow_running) && [ "$(cat "$MLFLOW_MODE" 2>/dev/null || echo plain)" != "$MODE" ]; then
  say "mlflow server (pid $pid) runs $(cat "$MLFLOW_MODE" 2>/dev/null || echo plain): restarting it $MODE"
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
  rm -f "$MLFLOW_PID"
fi
if ! mlflow_running >/dev/null; then
  APP=()
  if [ "$AUTH" = 1 ]; then
    APP=(--app-name basic-auth)
    export MLFLOW_AUTH_CONFIG_PATH=$AUTH_INI
    MLFLOW_FLASK_SERVER_SECRET_KEY=$(cat "$FLASK_SECRET")
    export MLFLOW_FLASK_SERVER_SECRET_KEY
  fi
  PGPASSFILE=$PASSFILE setsid "$MLFLOW" server "${APP[@]}" \
    --backend-store-uri "postgresql://mlflow@127.0.0.1:$PG_PORT/mlflow" \
    --serve-artifacts --artifacts-destination "$ARTIFACTS" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" >"$MLFLOW_LOG" 2>&1 </dev/null &
  echo $! >"$MLFLOW_PID"
  echo "$MODE" >"$MLFLOW_MODE"
  unset MLFLOW_AUTH_CONFIG_PATH MLFLOW_FLASK_SERVER_SECRET_KEY
  for _ in $(seq 240); do
    curl -sf "$URL/health" >/dev/null 2>&1 && break
    mlflow_running >/dev/null || die "mlflow server exited (log: $MLFLOW_LOG): $(tail -1 "$MLFLOW_LOG")"
    sleep 0.5
  done
  curl -sf "$URL/health" >/dev/null 2>&1 || die "mlflow server did not answer on $URL within 120 s (log: $MLFLOW_LOG)"
fi
say "MLflow tracking server: $URL (PostgreSQL backend store on 127.0.0.1:$PG_PORT, artifacts in $ARTIFACTS)"
say "log to it with: python main.py ... tracking.uri=$URL   (or export MLFLOW_TRACKING_URI=$URL)"
if [ "$AUTH" = 1 ]; then
  say "basic auth: users in $AUTH_DB; admin user '$ADMIN_USER', password in $ADMIN_PASS (mode 600)"
  say "authenticate from the environment (or .env), never in a config:"
  say "  export MLFLOW_TRACKING_USERNAME=$ADMIN_USER MLFLOW_TRACKING_PASSWORD=\$(cat $ADMIN_PASS)"
fi
