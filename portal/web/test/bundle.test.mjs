// The served bundle, portal/assets/pki.js: the same API as src/pki.mjs, no
// eval (the portal's CSP forbids it), and it works: a key, a PKCS#12 file
// OpenSSL reads, read back, and a renewal request OpenSSL verifies.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { webcrypto } from "node:crypto";

if (!globalThis.crypto) globalThis.crypto = webcrypto; // Node 18

const bundle = new URL("../../assets/pki.js", import.meta.url);
const skip = existsSync(bundle) ? false : "portal/assets/pki.js not built (bash portal/web/build.sh)";

test("the bundle: same exports, no eval, pinned versions", { skip }, async () => {
  const built = await import(bundle);
  const src = await import("../src/pki.mjs");
  assert.deepEqual(Object.keys(built).sort(), Object.keys(src).sort());
  const text = readFileSync(bundle, "utf8");
  assert.doesNotMatch(text, /\beval\s*\(/);
  assert.doesNotMatch(text, /new\s+Function|\bFunction\s*\(/);
  assert.doesNotMatch(text, /\/(work|home|root|tmp)\//, "no build paths");
  const lock = JSON.parse(readFileSync(new URL("../package-lock.json", import.meta.url), "utf8"));
  for (const p of ["pkijs", "asn1js", "esbuild"]) {
    assert.ok(text.includes(`${p} ${lock.packages[`node_modules/${p}`].version}`), `banner names ${p} as locked`);
  }
});

test("the bundle works", { skip }, async () => {
  const pki = await import(bundle);
  const dir = mkdtempSync(join(tmpdir(), "muhr-pki-bundle-"));
  const at = (f) => join(dir, f);
  const openssl = (...a) => execFileSync("openssl", a, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  try {
    const k = await pki.newKeyAndCsr();
    writeFileSync(at("k.csr"), k.csrPem);
    openssl("req", "-in", at("k.csr"), "-verify", "-noout");
    // A throw-away CA certifies it.
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", at("ca.key"),
      "-subj", "/CN=CA", "-days", "2", "-out", at("ca.pem"));
    openssl("x509", "-req", "-in", at("k.csr"), "-CA", at("ca.pem"), "-CAkey", at("ca.key"), "-set_serial", "7",
      "-days", "2", "-outform", "DER", "-out", at("k.der"));
    const cert = new Uint8Array(readFileSync(at("k.der")));
    const ca = pki.fromPem(readFileSync(at("ca.pem"), "utf8"))[0];
    const p12 = await pki.buildPkcs12({ privateKey: k.privateKey, certificateDer: cert, chainDer: [ca], password: "bundle-pass-1", friendlyName: "b" });
    writeFileSync(at("k.p12"), p12);
    assert.equal(openssl("pkcs12", "-in", at("k.p12"), "-passin", "pass:bundle-pass-1", "-nodes").match(/BEGIN CERTIFICATE/g).length, 2);
    const r = await pki.readPkcs12(p12, "bundle-pass-1");
    await assert.rejects(pki.readPkcs12(p12, "bundle-pass-2"), { code: "wrong_password" });
    const fresh = await pki.newKeyAndCsr();
    const req = await pki.renewalRequest({ privateKey: r.privateKey, certificateDer: r.certificateDer, newCsrDer: fresh.csrDer, challenge: "renew-7.1.n.t" });
    writeFileSync(at("r.der"), req);
    openssl("cms", "-verify", "-noverify", "-inform", "DER", "-in", at("r.der"), "-out", at("p.der"));
    assert.deepEqual(new Uint8Array(readFileSync(at("p.der"))), pki.pkiData(fresh.csrDer, "renew-7.1.n.t"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
