#!/usr/bin/env bash
# Runs example 14_distributed against a local Redis: uses the one that answers at
# $REDIS_URL (default redis://127.0.0.1:6379/), or starts a throwaway redis-server
# on port 6379 for the run and stops it afterwards.
set -euo pipefail
cd "$(dirname "$0")/../.."
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/}"
hostport="${REDIS_URL#redis://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=6379

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

started=""
if ! answers; then
    command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
    dir=$(mktemp -d)
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --save "" --daemonize no \
        --loglevel warning >"$dir/log" 2>&1 &
    started=$!
    trap 'kill $started 2>/dev/null; wait $started 2>/dev/null; rm -rf "$dir"' EXIT
    for _ in $(seq 100); do answers && break; sleep 0.05; done
    answers || { echo "redis-server did not start:" >&2; cat "$dir/log" >&2; exit 1; }
    echo "started redis-server on port $port (stopped at the end)"
fi
cargo run -q -p servicekit-examples --example 14_distributed "$@"
