# Shared by up.sh and down.sh (sourced, not run): where the server lives and who runs PostgreSQL.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BASE=${EXPLAUNCH_MLFLOW_SERVER_DIR:-$ROOT/.mlflow-server}
PG_PORT=${EXPLAUNCH_PG_PORT:-5433}
MLFLOW_PORT=${EXPLAUNCH_MLFLOW_PORT:-5055}
PGDATA=$BASE/pg/data
PGSOCK=$BASE/pg/run  # PostgreSQL's socket folder: private to its user (mode 700)
PGLOG=$BASE/pg/postgres.log
PASSFILE=$BASE/pgpass  # libpq's password file (mode 600): the password is in no command line and no environment
MLFLOW_PID=$BASE/mlflow.pid
MLFLOW_LOG=$BASE/mlflow.log
ARTIFACTS=$BASE/artifacts
# MLflow's basic-auth app (EXPLAUNCH_MLFLOW_AUTH=1, or make mlflow-server-up AUTH=1): its own folder (mode 700) with
# its config, its user database and the generated secrets (mode 600)
AUTH=${EXPLAUNCH_MLFLOW_AUTH:-0}
AUTH_DIR=$BASE/auth
AUTH_INI=$AUTH_DIR/basic_auth.ini
AUTH_DB=$AUTH_DIR/basic_auth.db
ADMIN_USER=admin
ADMIN_PASS=$AUTH_DIR/admin.pass  # the admin's password: users read it from here into MLFLOW_TRACKING_PASSWORD
FLASK_SECRET=$AUTH_DIR/flask.secret  # signs the UI's sessions and CSRF tokens (MLFLOW_FLASK_SERVER_SECRET_KEY)
MLFLOW_MODE=$BASE/mlflow.mode  # how the running server was started: plain or basic-auth
# PostgreSQL refuses to run as root: as root it runs as Debian's `postgres` user, otherwise as whoever runs this
if [ "$(id -u)" -eq 0 ]; then PG_USER=postgres; else PG_USER=$(id -un); fi
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }
# mlflow_running: the pid of the server this folder started, if it still runs
mlflow_running() {
  local pid
  [ -f "$MLFLOW_PID" ] || return 1
  pid=$(cat "$MLFLOW_PID")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
