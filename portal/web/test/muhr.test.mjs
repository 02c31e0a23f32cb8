// The page's files and requests against Muhr itself: a development CA made
// by the `muhr` binary certifies a key made here, `muhr client sign` opens
// the PKCS#12 file buildPkcs12 wrote, and a running `muhr serve` renews the
// certificate from renewalRequest's message (the Rust CMS verifier and CMC
// parser). Needs a built binary: $MUHR_BIN, else target/release/muhr or
// target/debug/muhr of this repository; skipped without one (this test
// never builds it).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { webcrypto } from "node:crypto";

if (!globalThis.crypto) globalThis.crypto = webcrypto; // Node 18

const pki = await import("../src/pki.mjs");

const repo = new URL("../../../", import.meta.url).pathname;
const bin = [process.env.MUHR_BIN, join(repo, "target/release/muhr"), join(repo, "target/debug/muhr")].find(
  (p) => p && existsSync(p),
);
const skip = bin ? false : "no muhr binary (set MUHR_BIN or build the repository)";

let dir;
let server;
let base;
const at = (f) => join(dir, f);
const muhr = (...args) => execFileSync(bin, ["--config", at("muhr.toml"), ...args], { cwd: dir, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  if (skip) return;
  dir = mkdtempSync(join(tmpdir(), "muhr-pki-e2e-"));
  const [port, mtls] = [await freePort(), await freePort()];
  base = `http://127.0.0.1:${port}`;
  // The identity provider's keys: renewal needs no ID token, but [citizens] needs a provider.
  const k = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  const jwk = await crypto.subtle.exportKey("jwk", k.publicKey);
  writeFileSync(at("jwks.json"), JSON.stringify({ keys: [{ kty: jwk.kty, crv: jwk.crv, x: jwk.x, y: jwk.y, kid: "t", use: "sig", alg: "ES256" }] }));
  const dev = readFileSync(join(repo, "examples/dev.toml"), "utf8")
    .replaceAll("127.0.0.1:8080", `127.0.0.1:${port}`)
    .replace(/^listen = .*$/m, (l) => `${l}\nlisten_mtls = "127.0.0.1:${mtls}"`);
  writeFileSync(
    at("muhr.toml"),
    `${dev}\n[citizens.oidc]\nissuer = "https://id.test"\naudience = "muhr"\njwks_file = "jwks.json"\n`,
  );
  muhr("ca", "init");
});

after(async () => {
  if (server) {
    server.kill("SIGTERM");
    await new Promise((r) => server.once("exit", r));
  }
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function post(path, body) {
  const res = await fetch(base + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

test("Muhr certifies the page's key, signs with its PKCS#12 file and renews from its CMC request", { skip }, async () => {
  // A certificate for a key made by the page (Muhr ignores the CSR's subject).
  const old = await pki.newKeyAndCsr();
  writeFileSync(at("old.csr"), old.csrPem);
  writeFileSync(
    at("me.json"),
    JSON.stringify({ pinfl: "31505851234562", surname: "IVANOV", given_name: "IVAN", patronymic: "IVANOVICH", tin: "412345678" }),
  );
  const pem = muhr("issue", "--profile", "individual-auth", "--csr", at("old.csr"), "--subject", at("me.json"));
  const cert = pki.fromPem(pem)[0];
  const chain = ["issuing.pem", "root.pem"].map((f) => pki.fromPem(readFileSync(at(`muhr-data/ca/${f}`), "utf8"))[0]);

  // `muhr client sign` (p12-keystore) opens the file the page made.
  const password = "Samarqand-Buxoro-1924";
  const p12 = await pki.buildPkcs12({ privateKey: old.privateKey, certificateDer: cert, chainDer: chain, password, friendlyName: "IVANOV IVAN" });
  writeFileSync(at("me.p12"), p12);
  writeFileSync(at("pw"), `${password}\n`);
  writeFileSync(at("doc.txt"), "a contract\n");
  execFileSync(bin, ["client", "sign", at("doc.txt"), "--p12", at("me.p12"), "--password-file", at("pw")], { cwd: dir, stdio: "ignore" });
  writeFileSync(at("cas.pem"), readFileSync(at("muhr-data/ca/root.pem"), "utf8") + readFileSync(at("muhr-data/ca/issuing.pem"), "utf8"));
  execFileSync("openssl", ["cms", "-verify", "-inform", "DER", "-in", at("doc.txt.p7s"), "-content", at("doc.txt"), "-binary",
    "-CAfile", at("cas.pem"), "-purpose", "any", "-out", "/dev/null"], { stdio: "ignore" });

  // Renewal against the running server, with the key read back from the file.
  server = spawn(bin, ["--config", at("muhr.toml"), "serve"], { cwd: dir, stdio: "ignore" });
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(`${base}/health`)).status < 500) break;
    } catch {
      // not listening yet
    }
    assert.ok(i < 300, "muhr serve did not start");
    await new Promise((r) => setTimeout(r, 100));
  }
  const current = await pki.readPkcs12(p12, password);
  writeFileSync(at("old.der"), current.certificateDer);
  const serial = execFileSync("openssl", ["x509", "-inform", "DER", "-in", at("old.der"), "-noout", "-serial"], { encoding: "utf8" })
    .trim()
    .replace(/^serial=/, "");
  const ch = await post("/api/v1/certificates/renew/challenge", { serial });
  assert.equal(ch.status, 201, JSON.stringify(ch.body));
  const fresh = await pki.newKeyAndCsr();
  const request = await pki.renewalRequest({
    privateKey: current.privateKey,
    certificateDer: current.certificateDer,
    newCsrDer: fresh.csrDer,
    challenge: ch.body.challenge,
  });
  const renewed = await post("/api/v1/certificates/renew", { signature: pki.toBase64(request) });
  assert.equal(renewed.status, 201, JSON.stringify(renewed.body));
  assert.equal(renewed.body.renewed.toUpperCase(), serial.toUpperCase());
  // The new certificate is for the new key.
  writeFileSync(at("new.der"), pki.fromBase64(renewed.body.der));
  const newKey = execFileSync("openssl", ["x509", "-inform", "DER", "-in", at("new.der"), "-pubkey", "-noout"], { encoding: "utf8" });
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", fresh.publicKey));
  assert.deepEqual(pki.fromPem(newKey)[0], spki);

  // The same message again is a retry of this renewal: the same certificate back.
  const again = await post("/api/v1/certificates/renew", { signature: pki.toBase64(request) });
  assert.equal(again.status, 200, JSON.stringify(again.body));
  assert.equal(again.body.serial, renewed.body.serial);
});
