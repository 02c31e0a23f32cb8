#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (when root),
# starts a throw-away PostgreSQL, then fmt, clippy and every test against
# SQLite, PostgreSQL, SoftHSM2 and OpenSSL.
#
#   bash tests/run.sh
#
# Nothing here is optional: a test that needs a component it cannot find fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

log() { printf '\n== %s\n' "$*"; }

# --- system packages --------------------------------------------------------
need_pkgs=()
command -v softhsm2-util >/dev/null || need_pkgs+=(softhsm2)
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need_pkgs+=(softhsm2)
command -v pkcs11-tool >/dev/null || need_pkgs+=(opensc)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v curl >/dev/null || need_pkgs+=(curl)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_pkgs+=(postgresql)
command -v pip3 >/dev/null || command -v pip >/dev/null || need_pkgs+=(python3-pip)
command -v chronyd >/dev/null || [ -x /usr/sbin/chronyd ] || need_pkgs+=(chrony)
command -v wrk >/dev/null || need_pkgs+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_pkgs+=(nginx-light)
# The browser tests drive Debian's headless Chromium through its chromedriver,
# at these paths (tests/common/browser.rs).
[ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
[ -x /usr/bin/chromedriver ] || need_pkgs+=(chromium-driver)
command -v node >/dev/null || need_pkgs+=(nodejs)
command -v npm >/dev/null || need_pkgs+=(npm)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${need_pkgs[*]} (run as root to install them)" >&2; exit 1
  fi
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# pkilint: an independent RFC 5280 linter run over everything Muhr issues.
# Its commands land in the scripts directory of the Python that installs it,
# which is not on every PATH.
export PATH="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
if ! command -v lint_pkix_cert >/dev/null; then
  log "installing pkilint"
  python3 -m pip install -q pkilint 2>/dev/null || python3 -m pip install -q --break-system-packages pkilint
fi
command -v lint_pkix_cert >/dev/null || { echo "pkilint did not install" >&2; exit 1; }
# schemathesis: a schema-based API fuzzer run against both listeners'
# OpenAPI descriptions (tests/api_conformance.rs).
if ! command -v schemathesis >/dev/null; then
  log "installing schemathesis"
  python3 -m pip install -q schemathesis 2>/dev/null || python3 -m pip install -q --break-system-packages schemathesis
fi
command -v schemathesis >/dev/null || { echo "schemathesis did not install" >&2; exit 1; }
# pyHanko: an independent PDF signer (its CLI is the separate pyhanko-cli
# package) that makes the signed PDFs validation/tests/pdf.rs reads back.
if ! command -v pyhanko >/dev/null || ! python3 -m pyhanko --version >/dev/null 2>&1; then
  log "installing pyhanko"
  python3 -m pip install -q pyhanko pyhanko-cli 2>/dev/null || python3 -m pip install -q --break-system-packages pyhanko pyhanko-cli
fi
command -v pyhanko >/dev/null && python3 -m pyhanko --version >/dev/null 2>&1 || { echo "pyhanko did not install" >&2; exit 1; }

# --- throw-away PostgreSQL ---------------------------------------------------
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
PGDIR=$(mktemp -d /tmp/muhr-pg.XXXXXX)
PGPORT=${MUHR_TEST_PGPORT:-54329}
chmod 755 "$PGDIR"
RUNAS=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$PGDIR"
  RUNAS=(runuser -u postgres --)
fi
cleanup() {
  "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGDIR"
}
trap cleanup EXIT
log "starting PostgreSQL on 127.0.0.1:$PGPORT"
"${RUNAS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-p $PGPORT -k $PGDIR -c listen_addresses=127.0.0.1 -c max_connections=400" start >/dev/null
export MUHR_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$PGPORT/postgres"

# --- Rust ------------------------------------------------------------------
# A one-off build gains nothing from incremental compilation, whose caches
# take more than a gigabyte; the free space is printed because a full disk
# is the one failure the build output explains badly.
export CARGO_INCREMENTAL=0
df -h . | tail -1
# Every fuzz target is in one crate (fuzz/): built once, run one after the
# other; the build is deleted once they have run, before the test binaries
# are linked.
FUZZ_TARGET="$ROOT/target/fuzz"
log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "building the fuzz targets (cargo fuzz)"
command -v cargo-fuzz >/dev/null || cargo install -q cargo-fuzz --locked
# cargo fuzz needs unstable compiler flags; this toolchain is stable.
if ! RUSTC_BOOTSTRAP=1 cargo fuzz build --target-dir "$FUZZ_TARGET" --fuzz-dir fuzz > /tmp/muhr-fuzz-build.log 2>&1; then
  tail -40 /tmp/muhr-fuzz-build.log; echo "the fuzz targets did not build" >&2; exit 1
fi
log "fuzzing the OCSP request path (${MUHR_FUZZ_SECONDS:-60} s)"
if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$FUZZ_TARGET" --fuzz-dir fuzz ocsp_request -- \
    -max_total_time="${MUHR_FUZZ_SECONDS:-60}" > /tmp/muhr-fuzz.log 2>&1; then
  tail -40 /tmp/muhr-fuzz.log; echo "the OCSP request fuzzer found a crash" >&2; exit 1
fi
grep -E "^Done [0-9]+ runs" /tmp/muhr-fuzz.log
log "fuzzing the CMS input of login, renewal and verification (${MUHR_FUZZ_SECONDS:-60} s)"
# Seeds: real signatures from OpenSSL, attached and detached, so the fuzzer
# starts inside SignedData rather than at the first byte.
SEEDS=fuzz/corpus/cms_signed_data
mkdir -p "$SEEDS"
SEEDTMP=$(mktemp -d)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=seed -days 2 \
  -keyout "$SEEDTMP/k.pem" -out "$SEEDTMP/c.pem" 2>/dev/null
printf 'a login challenge' > "$SEEDTMP/m"
openssl cms -sign -binary -in "$SEEDTMP/m" -signer "$SEEDTMP/c.pem" -inkey "$SEEDTMP/k.pem" \
  -outform DER -out "$SEEDS/detached"
openssl cms -sign -binary -nodetach -in "$SEEDTMP/m" -signer "$SEEDTMP/c.pem" \
  -inkey "$SEEDTMP/k.pem" -outform DER -out "$SEEDS/attached"
rm -rf "$SEEDTMP"
if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$FUZZ_TARGET" --fuzz-dir fuzz cms_signed_data -- \
    -max_total_time="${MUHR_FUZZ_SECONDS:-60}" > /tmp/muhr-fuzz-cms.log 2>&1; then
  tail -40 /tmp/muhr-fuzz-cms.log; echo "the CMS fuzzer found a crash" >&2; exit 1
fi
grep -E "^Done [0-9]+ runs" /tmp/muhr-fuzz-cms.log
log "fuzzing the time-stamp request parser (${MUHR_FUZZ_SECONDS:-60} s)"
# Seeds: OpenSSL's own queries (SHA-256 with certReq and nonce, SHA-512
# with a policy and no nonce), so the fuzzer starts inside TimeStampReq.
SEEDS=fuzz/corpus/tsa_request
mkdir -p "$SEEDS"
printf 'a document' > "$SEEDS.data"
openssl ts -query -data "$SEEDS.data" -sha256 -cert -out "$SEEDS/sha256-cert" 2>/dev/null
openssl ts -query -data "$SEEDS.data" -sha512 -no_nonce -tspolicy 1.3.6.1.4.1.32473.3161.2 \
  -out "$SEEDS/sha512-policy" 2>/dev/null
rm -f "$SEEDS.data"
if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$FUZZ_TARGET" --fuzz-dir fuzz tsa_request -- \
    -max_total_time="${MUHR_FUZZ_SECONDS:-60}" > /tmp/muhr-fuzz-tsa.log 2>&1; then
  tail -40 /tmp/muhr-fuzz-tsa.log; echo "the time-stamp request fuzzer found a crash" >&2; exit 1
fi
grep -E "^Done [0-9]+ runs" /tmp/muhr-fuzz-tsa.log
log "fuzzing the PDF signature reader (${MUHR_FUZZ_SECONDS:-60} s)"
# Seeds: a minimal PDF and pyHanko's signatures over it (plain, PAdES, and
# a second signature after the first), so the fuzzer starts inside real
# signature dictionaries and byte ranges.
SEEDS=fuzz/corpus/pdf_signatures
mkdir -p "$SEEDS"
SEEDTMP=$(mktemp -d)
python3 - "$SEEDS/minimal.pdf" <<'PY'
import sys
from pyhanko.pdf_utils.writer import PdfFileWriter
from pyhanko.pdf_utils import generic
w = PdfFileWriter()
w.insert_page(generic.DictionaryObject({
    generic.NameObject('/Type'): generic.NameObject('/Page'),
    generic.NameObject('/MediaBox'): generic.ArrayObject([generic.NumberObject(x) for x in (0, 0, 595, 842)]),
}))
with open(sys.argv[1], "wb") as o:
    w.write(o)
PY
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=seed -days 2 \
  -keyout "$SEEDTMP/k.pem" -out "$SEEDTMP/c.pem" 2>/dev/null
for style in plain pades; do
  extra=(); [ "$style" = pades ] && extra=(--use-pades)
  python3 -m pyhanko sign addsig --field Sig1 "${extra[@]}" pemder --no-pass \
    --key "$SEEDTMP/k.pem" --cert "$SEEDTMP/c.pem" "$SEEDS/minimal.pdf" "$SEEDS/$style.pdf" \
    >/dev/null 2>&1 || { echo "pyhanko could not sign the fuzz seeds" >&2; exit 1; }
done
python3 -m pyhanko sign addsig --field Sig2 pemder --no-pass --key "$SEEDTMP/k.pem" \
  --cert "$SEEDTMP/c.pem" "$SEEDS/pades.pdf" "$SEEDS/two.pdf" >/dev/null 2>&1 \
  || { echo "pyhanko could not sign the fuzz seeds" >&2; exit 1; }
rm -rf "$SEEDTMP"
if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --target-dir "$FUZZ_TARGET" --fuzz-dir fuzz pdf_signatures -- \
    -max_total_time="${MUHR_FUZZ_SECONDS:-60}" > /tmp/muhr-fuzz-pdf.log 2>&1; then
  tail -40 /tmp/muhr-fuzz-pdf.log; echo "the PDF signature fuzzer found a crash" >&2; exit 1
fi
grep -E "^Done [0-9]+ runs" /tmp/muhr-fuzz-pdf.log
rm -rf "$FUZZ_TARGET"

log "tests (SQLite, PostgreSQL, SoftHSM2, OpenSSL)"
# nextest runs each test in its own process: PKCS#11 modules are initialised
# once per process, and tests point SOFTHSM2_CONF at their own tokens.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast --lib --bins --tests
fi

log "portal bundle: rebuilt from its lockfile, byte for byte, and its tests"
# The served portal/assets/pki.js must be exactly what portal/web/build.sh
# makes from the pinned packages (npm ci, no install scripts); its own tests
# check its PKCS#12 and renewal requests against OpenSSL and this build's muhr.
committed=$(mktemp)
git show HEAD:portal/assets/pki.js > "$committed" 2>/dev/null || cp portal/assets/pki.js "$committed"
# The committed bundle is put back whatever happens (build.sh overwrites it).
if ! bash portal/web/build.sh || ! cmp -s portal/assets/pki.js "$committed"; then
  cp "$committed" portal/assets/pki.js
  echo "portal/assets/pki.js is not what portal/web/build.sh makes from the lockfile" >&2
  exit 1
fi
cp "$committed" portal/assets/pki.js
test -x "$PWD/target/debug/muhr" || { echo "target/debug/muhr is missing: the bundle's round trip with Muhr cannot run" >&2; exit 1; }
MUHR_BIN="$PWD/target/debug/muhr" node --test portal/web/test/*.test.mjs
