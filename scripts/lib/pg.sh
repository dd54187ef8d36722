# Throwaway PostgreSQL clusters for scripts/dev and scripts/test.
# Source this file, then: pg_start DATADIR PORT; pg_stop DATADIR.
# initdb and pg_ctl refuse to run as root, so as root the cluster runs as the
# unprivileged `postgres` user (created by Debian's postgresql package).

pg_bindir() {
  local d
  if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/pg_ctl" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

pg_ensure_installed() {
  if pg_bindir >/dev/null; then return 0; fi
  echo "PostgreSQL server not found; installing Debian's postgresql package" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: need root (or sudo) to apt-get install postgresql; install it and rerun" >&2
    return 1
  fi
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2 || return 1
  pg_bindir >/dev/null
}

# as_pg runs a command as the cluster owner.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# pg_start DATADIR PORT: initdb (once) and start a cluster listening on 127.0.0.1:PORT
# with trust auth, its socket inside DATADIR. Prints nothing on success.
pg_start() {
  local data="$1" port="$2" bin
  pg_ensure_installed || return 1
  bin="$(pg_bindir)"
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  mkdir -p "$data"
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$data"
    chmod 700 "$data"
    # The postgres user must be able to reach DATADIR through its parents.
    if ! runuser -u postgres -- test -x "$data"; then
      echo "error: user postgres cannot reach $data (a parent directory is not searchable)" >&2
      return 1
    fi
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$data.initdb.log" 2>&1 \
      || as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$data.initdb.log" 2>&1 \
      || { cat "$data.initdb.log" >&2; return 1; }
  fi
  as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=300 -c shared_buffers=128MB -c fsync=${PG_FSYNC:-on}" start >/dev/null \
    || { tail -n 30 "$data/server.log" >&2; return 1; }
}

pg_stop() {
  local data="$1" bin
  bin="$(pg_bindir)" || return 0
  [ -f "$data/postmaster.pid" ] || return 0
  as_pg "$bin/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 || true
}

# pg_free_port prints a TCP port nobody listens on.
pg_free_port() {
  python3 - <<'PY' 2>/dev/null || echo $(( 20000 + RANDOM % 20000 ))
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}
