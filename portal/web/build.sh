#!/usr/bin/env bash
# Builds portal/assets/pki.js, the portal's browser cryptography (one ES
# module), from src/pki.mjs and the exact packages package-lock.json pins.
# Reproducible: the same sources and lockfile give the same bytes (no
# timestamps, no paths, no source map). Usage: bash portal/web/build.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "build.sh: installing Node.js and npm from the OS packages" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi

# Exactly the lockfile's packages; no install scripts run (esbuild's binary
# comes in its platform package, @esbuild/<os>-<arch>).
npm ci --ignore-scripts --no-audit --no-fund

out="../assets/pki.js"
mkdir -p ../assets
node_modules/.bin/esbuild src/pki.mjs \
  --bundle --format=esm --target=es2020 --platform=browser \
  --minify --legal-comments=eof --charset=ascii \
  --log-level=warning \
  --banner:js="/* Muhr citizen portal: browser cryptography. Built by portal/web/build.sh from portal/web/src/pki.mjs with pkijs $(node -p 'require("./node_modules/pkijs/package.json").version'), asn1js $(node -p 'require("./node_modules/asn1js/package.json").version'), esbuild $(node -p 'require("./node_modules/esbuild/package.json").version'). Do not edit. */" \
  --outfile="$out"

# The portal's Content-Security-Policy allows no eval: the bundle must not need it.
if grep -nE 'eval\(|new Function|Function\(' "$out" >/dev/null; then
  echo "build.sh: $out contains eval or the Function constructor; the portal's CSP forbids them" >&2
  exit 1
fi
if grep -n "$here" "$out" >/dev/null; then
  echo "build.sh: $out contains a build path" >&2
  exit 1
fi

echo "$(sha256sum "$out" | cut -d' ' -f1)  portal/assets/pki.js ($(wc -c <"$out") bytes)"
