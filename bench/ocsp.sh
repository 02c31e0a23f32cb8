#!/usr/bin/env bash
# OCSP throughput of `muhr serve` over real HTTP on loopback, measured with wrk,
# the same way ../shared/bench/peers measures cfssl, OpenSSL and nginx:
#   cached POST and GET (no nonce: pre-signed responses), live (with a nonce:
#   signed per request). Development defaults: software keys, SQLite.
#
#   bash bench/ocsp.sh [SECONDS]
#
# The installation is a throw-away one made by muhr-bench (its database
# carries the benchmark marker), so the synthetic rows of the mixed run can
# be written into it.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
cargo build --release -q
M=$PWD/target/release/muhr
B=$PWD/target/release/muhr-bench
DIR=$(mktemp -d /tmp/muhr-ocsp-bench.XXXXXX)
PORT=${MUHR_BENCH_PORT:-18100}
cd "$DIR"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -subj /CN=x -out r.csr 2>/dev/null
python3 - > s.json <<'P'
import json
s = "3150585123456"
w = [7, 3, 1]
print(json.dumps({"pinfl": s + str(sum(int(c) * w[i % 3] for i, c in enumerate(s)) % 10), "surname": "BENCH", "given_name": "OCSP"}))
P
"$B" --data "$DIR/data" sign --signatures 1 >/dev/null
"$M" --data "$DIR/data" issue --profile individual-auth --csr r.csr --subject s.json > c.pem 2>/dev/null
MUHR_LOG=warn "$B" --data "$DIR/data" serve --listen "127.0.0.1:$PORT" --listen-mtls "127.0.0.1:$((PORT + 1))" 2>serve.log & pid=$!
trap 'kill $pid 2>/dev/null; [ -n "${MUHR_BENCH_KEEP:-}" ] || rm -rf "$DIR"' EXIT
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
I=data/ca/issuing.pem
openssl ocsp -issuer $I -cert c.pem -no_nonce -reqout cached.der >/dev/null 2>&1
openssl ocsp -issuer $I -cert c.pem -reqout live.der >/dev/null 2>&1
lua() { printf 'wrk.method = "POST"\nlocal f = io.open("%s","rb"); wrk.body = f:read("*a"); f:close()\nwrk.headers["Content-Type"] = "application/ocsp-request"\n' "$1" > "$2"; }
lua "$DIR/cached.der" cached.lua
lua "$DIR/live.der" live.lua
get=$(base64 -w0 cached.der | python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.stdin.read(), safe=""))')
rate() { wrk -t2 -c32 -d"${secs}s" ${2:+-s "$2"} "$1" 2>/dev/null | awk '/Requests\/sec/{print int($2)}'; }
# Warm the cache and check the answer once.
curl -sf -o warm.der --data-binary @cached.der -H 'Content-Type: application/ocsp-request' "http://127.0.0.1:$PORT/ocsp"
openssl ocsp -respin warm.der -issuer $I -cert c.pem -CAfile data/ca/root.pem 2>&1 | grep -q "c.pem: good"
echo "muhr_ocsp_cached_post_per_s $(rate "http://127.0.0.1:$PORT/ocsp" cached.lua)"
echo "muhr_ocsp_cached_get_per_s $(rate "http://127.0.0.1:$PORT/ocsp/$get")"
echo "muhr_ocsp_live_nonce_per_s $(rate "http://127.0.0.1:$PORT/ocsp" live.lua)"
# Mixed: 1,000,000 issued serials (one in ten revoked) asked about uniformly
# at random, without a nonce: mostly first-time questions (status read, signed,
# cached within the ocsp.cache_mb budget). MUHR_BENCH_SERIALS overrides the count.
n=${MUHR_BENCH_SERIALS:-1000000}
"$B" --data "$DIR/data" populate --certificates "$n" --revoked-every 10 --serials-out "$DIR/serials.txt"
head -c $(( $(stat -c %s cached.der) - 20 )) cached.der > prefix.der
# The template's last 20 octets are the CertID serial (a 20-octet Muhr serial);
# one revoked serial checks the answer.
rev=$(sed -n 1p serials.txt)
{ cat prefix.der; python3 -c "import sys; sys.stdout.buffer.write(bytes.fromhex('$rev'))"; } > one.der
curl -sf -o one.resp --data-binary @one.der -H 'Content-Type: application/ocsp-request' "http://127.0.0.1:$PORT/ocsp"
openssl ocsp -respin one.resp -CAfile data/ca/root.pem -verify_other $I -resp_text 2>/dev/null | grep -q "Cert Status: revoked"
cat > mixed.lua <<L
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/ocsp-request"
local f = io.open("$DIR/prefix.der", "rb"); local prefix = f:read("*a"); f:close()
local bodies = {}
for line in io.lines("$DIR/serials.txt") do
  bodies[#bodies + 1] = prefix .. (line:gsub("..", function(h) return string.char(tonumber(h, 16)) end))
end
math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
request = function()
  return wrk.format(nil, nil, nil, bodies[math.random(#bodies)])
end
L
echo "muhr_ocsp_mixed_${n}_per_s $(rate "http://127.0.0.1:$PORT/ocsp" mixed.lua)"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^muhr_ocsp_(cache_bytes|cache_entries|signed_total|cache_hits_total)' | sed 's/^/# /'
grep -q . serve.log && { echo "# serve.log:"; tail -5 serve.log | sed 's/^/# /'; } || true
