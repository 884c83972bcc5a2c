#!/bin/bash
# The entry point of the postgres stand-in image (tools/polyframe-release builds it where no
# registry is reachable). Written for Polyframe, following the documented contract of the
# official image's entry point (https://hub.docker.com/_/postgres), which the charts rely on:
#
#   * POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER
#     (default postgres), POSTGRES_DB (default: POSTGRES_USER), POSTGRES_INITDB_ARGS,
#     POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD (default scram-sha-256), PGDATA;
#   * on an empty data directory only: initdb, then every file of /docker-entrypoint-initdb.d
#     in name order against a server that listens on its Unix socket only (*.sh run when
#     executable and sourced otherwise, *.sql, *.sql.gz, *.sql.xz through psql);
#   * a first argument starting with `-` is a flag of `postgres`; as root the server runs as
#     the `postgres` user (uid 999); as any other user it runs as that user.
set -Eeuo pipefail

log() { printf '%s [entrypoint] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*"; }
fail() { log "error: $*" >&2; exit 1; }

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" != 'postgres' ]; then
	exec "$@"
fi

: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA

if [ "$(id -u)" = '0' ]; then
	# As root: the data and socket directories belong to postgres, then run as postgres.
	mkdir -p "$PGDATA" /var/run/postgresql
	chown -R postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 0700 "$PGDATA"
	exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

id -un >/dev/null 2>&1 || fail "uid $(id -u) has no entry in /etc/passwd: run as uid 999 (postgres)"

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
export POSTGRES_USER POSTGRES_DB

run_init_file() {
	local file="$1"
	case "$file" in
		*.sh)
			if [ -x "$file" ]; then
				log "running $file"
				"$file"
			else
				log "sourcing $file"
				# shellcheck disable=SC1090
				. "$file"
			fi
			;;
		*.sql) log "running $file"; psql_init -f "$file" ;;
		*.sql.gz) log "running $file"; gunzip -c "$file" | psql_init ;;
		*.sql.xz) log "running $file"; xzcat "$file" | psql_init ;;
		*) log "ignoring $file" ;;
	esac
}

psql_init() {
	psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
	if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != 'trust' ]; then
		fail "the database is uninitialized and POSTGRES_PASSWORD is not set: set it (or POSTGRES_HOST_AUTH_METHOD=trust, which allows anyone to connect without a password)"
	fi
	mkdir -p "$PGDATA"
	chmod 0700 "$PGDATA" || true
	log "initialising $PGDATA"
	initdb_args=(--username="$POSTGRES_USER" --auth-local=trust --auth-host="$POSTGRES_HOST_AUTH_METHOD")
	if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
		initdb_args+=(--waldir="$POSTGRES_INITDB_WALDIR")
	fi
	if [ -n "${POSTGRES_PASSWORD:-}" ]; then
		# shellcheck disable=SC2086
		initdb "${initdb_args[@]}" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") ${POSTGRES_INITDB_ARGS:-}
	else
		# shellcheck disable=SC2086
		initdb "${initdb_args[@]}" ${POSTGRES_INITDB_ARGS:-}
	fi
	printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# A server on the Unix socket only for the init files: nothing reaches it from outside.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
	if [ "$POSTGRES_DB" != 'postgres' ]; then
		psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
			--set db="$POSTGRES_DB" <<-'SQL'
			CREATE DATABASE :"db";
		SQL
	fi
	if [ -d /docker-entrypoint-initdb.d ]; then
		for file in /docker-entrypoint-initdb.d/*; do
			[ -e "$file" ] || continue
			run_init_file "$file"
		done
	fi
	pg_ctl -D "$PGDATA" -m fast -w stop
	log "initialised; starting the server"
fi

exec "$@"
