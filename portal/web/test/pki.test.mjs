// Tests of src/pki.mjs under Node's WebCrypto, checked with the openssl
// command-line tool (OpenSSL 3, never with -legacy). Run: node --test test/
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { webcrypto } from "node:crypto";

if (!globalThis.crypto) globalThis.crypto = webcrypto; // Node 18

const pki = await import("../src/pki.mjs");

const PASSWORD = "oʻzbek parol 2026"; // non-ASCII on purpose: UTF-8 for PBKDF2, BMP for the MAC
let dir;
const at = (f) => join(dir, f);
const openssl = (...args) => execFileSync("openssl", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
const opensslBytes = (...args) => execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] });

/** A throw-away two-level CA (root P-384, issuing P-256), as Muhr's. */
before(() => {
  dir = mkdtempSync(join(tmpdir(), "muhr-pki-test-"));
  writeFileSync(at("ca.ext"), "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
  writeFileSync(
    at("leaf.ext"),
    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n",
  );
  openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-nodes", "-keyout", at("root.key"),
    "-subj", "/C=UZ/O=Test/CN=Test Root CA", "-days", "30", "-addext", "basicConstraints=critical,CA:TRUE",
    "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", at("root.pem"));
  openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", at("issuing.key"),
    "-subj", "/C=UZ/O=Test/CN=Test Issuing CA", "-out", at("issuing.csr"));
  openssl("x509", "-req", "-in", at("issuing.csr"), "-CA", at("root.pem"), "-CAkey", at("root.key"), "-set_serial", "1",
    "-days", "30", "-extfile", at("ca.ext"), "-out", at("issuing.pem"));
});

after(() => rmSync(dir, { recursive: true, force: true }));

let serial = 100;
/** The CA certifies the request in `csrPem` (a v3 certificate, DER). */
function certify(csrPem, name) {
  writeFileSync(at(`${name}.csr`), csrPem);
  openssl("x509", "-req", "-in", at(`${name}.csr`), "-CA", at("issuing.pem"), "-CAkey", at("issuing.key"),
    "-set_serial", String(serial++), "-days", "10", "-extfile", at("leaf.ext"),
    "-subj", "/C=UZ/CN=IVANOV IVAN/serialNumber=PNOUZ-31505851234562", "-outform", "DER", "-out", at(`${name}.der`));
  return new Uint8Array(readFileSync(at(`${name}.der`)));
}

const chain = () => ["issuing.pem", "root.pem"].map((f) => pki.fromPem(readFileSync(at(f), "utf8"))[0]);

async function signAndVerify(privateKey, certificateDer) {
  const data = new TextEncoder().encode("a document to sign");
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, privateKey, data);
  writeFileSync(at("c.der"), certificateDer);
  const spki = opensslBytes("x509", "-inform", "DER", "-in", at("c.der"), "-pubkey", "-noout");
  const der = pki.fromPem(spki.toString())[0];
  const pub = await crypto.subtle.importKey("spki", der, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  assert.ok(await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, pub, sig, data), "signature verifies");
}

test("newKeyAndCsr: a P-256 key and a request OpenSSL verifies", async () => {
  const k = await pki.newKeyAndCsr();
  assert.equal(k.privateKey.algorithm.namedCurve, "P-256");
  assert.equal(k.privateKey.extractable, true);
  assert.ok(k.csrDer instanceof Uint8Array);
  assert.match(k.csrPem, /^-----BEGIN CERTIFICATE REQUEST-----\n/);
  writeFileSync(at("new.csr"), k.csrPem);
  const verified = spawnSync("openssl", ["req", "-in", at("new.csr"), "-verify", "-noout"], { encoding: "utf8" });
  assert.equal(verified.status, 0, verified.stderr);
  assert.match(verified.stdout + verified.stderr, /verify OK|signature ok/i);
  const text = openssl("req", "-in", at("new.csr"), "-noout", "-text");
  assert.match(text, /ecdsa-with-SHA256/);
  assert.match(text, /NIST CURVE: P-256/);
  assert.match(text, /Attributes:/);
  // The PEM is the DER.
  assert.deepEqual(pki.fromPem(k.csrPem)[0], k.csrDer);
});

test("buildPkcs12: OpenSSL 3 reads it without -legacy; key matches certificate; readPkcs12 reads it back", async () => {
  const k = await pki.newKeyAndCsr();
  const cert = certify(k.csrPem, "leaf");
  const p12 = await pki.buildPkcs12({
    privateKey: k.privateKey,
    certificateDer: cert,
    chainDer: chain(),
    password: PASSWORD,
    friendlyName: "IVANOV IVAN",
  });
  writeFileSync(at("built.p12"), p12);
  const pass = `pass:${PASSWORD}`;
  // -info writes its report on stderr; the exit status says it read the file.
  const info = spawnSync("openssl", ["pkcs12", "-in", at("built.p12"), "-passin", pass, "-info", "-noout"], {
    encoding: "utf8",
  });
  assert.equal(info.status, 0, info.stderr);
  const report = info.stdout + info.stderr;
  assert.match(report, /MAC: sha256, Iteration 200000/);
  assert.match(report, /PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 200000, PRF hmacWithSHA256/);
  assert.match(report, /Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 200000, PRF hmacWithSHA256/);
  assert.equal(report.match(/Certificate bag/g).length, 3);

  const pem = openssl("pkcs12", "-in", at("built.p12"), "-passin", pass, "-nodes");
  assert.equal(pem.match(/-----BEGIN CERTIFICATE-----/g).length, 3);
  assert.equal(pem.match(/-----BEGIN PRIVATE KEY-----/g).length, 1);
  assert.match(pem, /friendlyName: IVANOV IVAN/);
  assert.match(pem, /localKeyID:/);
  // The key printed is the certificate's.
  writeFileSync(at("out.pem"), pem);
  const fromKey = openssl("pkey", "-in", at("out.pem"), "-pubout");
  const fromCert = openssl("x509", "-in", at("leaf.der"), "-inform", "DER", "-pubkey", "-noout");
  assert.equal(fromKey, fromCert);
  // The chain verifies from the file's certificates.
  const certs = openssl("pkcs12", "-in", at("built.p12"), "-passin", pass, "-nokeys", "-clcerts");
  writeFileSync(at("clcert.pem"), certs);
  assert.match(openssl("verify", "-CAfile", at("root.pem"), "-untrusted", at("issuing.pem"), at("clcert.pem")), /OK/);

  const r = await pki.readPkcs12(p12, PASSWORD);
  assert.deepEqual(r.certificateDer, cert);
  assert.deepEqual(r.chainDer, chain());
  assert.equal(r.privateKey.extractable, false);
  await signAndVerify(r.privateKey, r.certificateDer);
});

test("readPkcs12: a file from `openssl pkcs12 -export` (OpenSSL 3 defaults)", async () => {
  openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", at("o.key"),
    "-subj", "/CN=x", "-out", at("o.csr"));
  const cert = certify(readFileSync(at("o.csr"), "utf8"), "o");
  openssl("x509", "-inform", "DER", "-in", at("o.der"), "-out", at("o.pem"));
  writeFileSync(at("o-chain.pem"), readFileSync(at("issuing.pem"), "utf8") + readFileSync(at("root.pem"), "utf8"));
  openssl("pkcs12", "-export", "-inkey", at("o.key"), "-in", at("o.pem"), "-certfile", at("o-chain.pem"),
    "-name", "o", "-passout", `pass:${PASSWORD}`, "-out", at("o.p12"));
  const r = await pki.readPkcs12(readFileSync(at("o.p12")), PASSWORD);
  assert.deepEqual(r.certificateDer, cert);
  assert.deepEqual(r.chainDer, chain());
  await signAndVerify(r.privateKey, r.certificateDer);
});

test("readPkcs12: a file p12-keystore wrote (`muhr client add`)", async () => {
  // test/fixtures/p12-keystore.p12: made by `muhr client add` (p12-keystore
  // 0.4.1: PBES2/PBKDF2-SHA256/AES-256-CBC, SHA-256 MAC, 10000 iterations)
  // with a throw-away development CA; password "fixture-password-1".
  const bytes = readFileSync(new URL("./fixtures/p12-keystore.p12", import.meta.url));
  const r = await pki.readPkcs12(bytes, "fixture-password-1");
  writeFileSync(at("ks.der"), r.certificateDer);
  assert.match(openssl("x509", "-inform", "DER", "-in", at("ks.der"), "-noout", "-subject"), /CN = portal-test/);
  assert.equal(r.chainDer.length, 2);
  const data = new TextEncoder().encode("x");
  const sig = await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, r.privateKey, data);
  assert.equal(sig.byteLength, 64);
  await assert.rejects(pki.readPkcs12(bytes, "fixture-password-2"), { code: "wrong_password" });
});

test("readPkcs12: a wrong password says so; legacy files and junk are refused clearly", async () => {
  const k = await pki.newKeyAndCsr();
  const cert = certify(k.csrPem, "w");
  const p12 = await pki.buildPkcs12({ privateKey: k.privateKey, certificateDer: cert, chainDer: chain(), password: PASSWORD, friendlyName: "w", iterations: 100000 });
  await assert.rejects(pki.readPkcs12(p12, "not the password"), (e) => {
    assert.ok(e instanceof pki.PkiError);
    assert.equal(e.code, "wrong_password");
    assert.match(e.message, /password is wrong/);
    return true;
  });
  await assert.rejects(pki.readPkcs12(p12, ""), { code: "wrong_password" });

  // 3DES and a SHA-1 MAC, as OpenSSL 1.1 wrote by default.
  openssl("pkcs12", "-export", "-inkey", at("o.key"), "-in", at("o.pem"), "-certpbe", "PBE-SHA1-3DES", "-keypbe",
    "PBE-SHA1-3DES", "-macalg", "sha1", "-passout", "pass:legacy-pass", "-out", at("legacy.p12"));
  await assert.rejects(pki.readPkcs12(readFileSync(at("legacy.p12")), "legacy-pass"), (e) => {
    assert.equal(e.code, "legacy");
    assert.match(e.message, /old algorithms/);
    return true;
  });
  // A SHA-256 MAC but 3DES inside.
  openssl("pkcs12", "-export", "-inkey", at("o.key"), "-in", at("o.pem"), "-certpbe", "PBE-SHA1-3DES", "-keypbe",
    "PBE-SHA1-3DES", "-passout", "pass:legacy-pass", "-out", at("legacy2.p12"));
  await assert.rejects(pki.readPkcs12(readFileSync(at("legacy2.p12")), "legacy-pass"), { code: "legacy" });

  await assert.rejects(pki.readPkcs12(new Uint8Array([1, 2, 3]), "x"), { code: "malformed" });
  await assert.rejects(pki.readPkcs12(cert, "x"), { code: "malformed" });
});

test("renewalRequest: a CMS SignedData of a CMC PKIData OpenSSL verifies, in Muhr's shape", async () => {
  const old = await pki.newKeyAndCsr();
  const cert = certify(old.csrPem, "old");
  const fresh = await pki.newKeyAndCsr();
  const challenge = "renew-1F2E3D.1733067000.q-Z_9";
  const der = await pki.renewalRequest({
    privateKey: old.privateKey,
    certificateDer: cert,
    newCsrDer: fresh.csrDer,
    challenge,
  });
  writeFileSync(at("r.der"), der);
  openssl("cms", "-verify", "-noverify", "-inform", "DER", "-in", at("r.der"), "-out", at("pkidata.der"));
  // Signed by the old certificate, which the message carries.
  writeFileSync(at("old.pem"), openssl("x509", "-inform", "DER", "-in", at("old.der")));
  writeFileSync(at("cas.pem"), readFileSync(at("root.pem"), "utf8") + readFileSync(at("issuing.pem"), "utf8"));
  openssl("cms", "-verify", "-inform", "DER", "-in", at("r.der"), "-CAfile", at("cas.pem"), "-purpose", "any",
    "-out", at("pkidata2.der"));
  const pkidata = new Uint8Array(readFileSync(at("pkidata.der")));
  assert.deepEqual(pkidata, pki.pkiData(fresh.csrDer, challenge));

  const shape = openssl("asn1parse", "-inform", "DER", "-in", at("pkidata.der"))
    .split("\n")
    .filter(Boolean)
    .map((l) => l.replace(/^\s*\d+:/, "").replace(/\s+/g, " ").trim());
  // PKIData ::= SEQUENCE { controlSequence, reqSequence, cmsSequence, otherMsgSequence }
  assert.match(shape[0], /^d=0 .* cons: SEQUENCE$/);
  assert.match(shape[1], /^d=1 .* cons: SEQUENCE$/); // controlSequence
  assert.match(shape[2], /^d=2 .* cons: SEQUENCE$/); // TaggedAttribute
  assert.match(shape[3], /^d=3 .* prim: INTEGER :02$/); // bodyPartID 2
  assert.match(shape[4], /^d=3 .* prim: OBJECT :id-cmc-recipientNonce$/);
  assert.match(shape[5], /^d=3 .* cons: SET$/);
  assert.equal(shape[6].replace(/^d=4 hl=\d+ l= ?\d+ /, ""), `prim: OCTET STRING :${challenge}`);
  assert.match(shape[7], /^d=1 .* cons: SEQUENCE$/); // reqSequence
  assert.match(shape[8], /^d=2 .* cons: cont \[ 0 \]$/); // tcr [0]
  assert.match(shape[9], /^d=3 .* prim: INTEGER :01$/); // bodyPartID 1
  assert.match(shape[10], /^d=3 .* cons: SEQUENCE$/); // CertificationRequest
  const tail = shape.slice(-2);
  assert.match(tail[0], /^d=1 hl=2 l= 0 cons: SEQUENCE$/); // cmsSequence, empty
  assert.match(tail[1], /^d=1 hl=2 l= 0 cons: SEQUENCE$/); // otherMsgSequence, empty
  assert.equal(shape.filter((l) => l.startsWith("d=1 ")).length, 4);
  // The request inside is the one given, byte for byte.
  const csrAt = indexOf(pkidata, fresh.csrDer);
  assert.ok(csrAt > 0);

  // The envelope: eContentType id-cct-PKIData; signer by issuer and serial;
  // signed attributes content type and message digest, nothing else.
  const env = openssl("asn1parse", "-inform", "DER", "-in", at("r.der"));
  assert.match(env, /OBJECT\s+:pkcs7-signedData/);
  assert.match(env, /INTEGER\s+:03\n/); // SignedData version 3
  assert.equal(env.match(/OBJECT\s+:id-cct-PKIData/g).length, 2); // eContentType and content-type attribute
  assert.match(env, /OBJECT\s+:contentType/);
  assert.match(env, /OBJECT\s+:messageDigest/);
  assert.doesNotMatch(env, /signingTime/);
  assert.equal(env.match(/ecdsa-with-SHA256/g).length, 3); // the certificate's twice, the signer's once
  const cmsInfo = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", at("r.der"));
  assert.match(cmsInfo, /signerInfos:\s+version: 1\s+d\.issuerAndSerialNumber:\s+issuer: C=UZ, O=Test, CN=Test Issuing CA\s+serialNumber: \d+/);
  // DER throughout: OpenSSL re-encodes it to the same bytes.
  const again = opensslBytes("cms", "-cmsout", "-inform", "DER", "-in", at("r.der"), "-outform", "DER");
  assert.deepEqual(new Uint8Array(again), der);

  // Another key than the certificate's is refused.
  await assert.rejects(
    pki.renewalRequest({ privateKey: fresh.privateKey, certificateDer: cert, newCsrDer: fresh.csrDer, challenge }),
    { code: "mismatch" },
  );
});

test("signatures are DER whatever the values (OpenSSL is strict about it)", async () => {
  // 30 CSRs: an r or s with its top bit set (a leading 00) or short comes up often.
  for (let i = 0; i < 30; i++) {
    const k = await pki.newKeyAndCsr();
    writeFileSync(at("loop.csr"), k.csrDer);
    execFileSync("openssl", ["req", "-inform", "DER", "-in", at("loop.csr"), "-verify", "-noout"], { stdio: "ignore" });
  }
});

test("passwordStrength", () => {
  const s = pki.passwordStrength;
  for (const weak of ["", "abc", "1234567", "12345678", "password", "Password1", "qwertyui", "aaaaaaaaaaaa", "abcabcabcabc", "Parol123"]) {
    assert.equal(s(weak).acceptable, false, weak);
  }
  for (const ok of ["Tq7#vLw2", "correct horse battery staple", "Samarqand-Buxoro-1924", "oʻzbek parol 2026", "ключ-Замок-97"]) {
    assert.equal(s(ok).acceptable, true, ok);
  }
  assert.equal(s("abcdefgh").score, 0);
  assert.ok(s("correct horse battery staple").score >= 3);
  for (const p of ["", "a", "Tq7#vLw2", "x".repeat(200)]) {
    const r = s(p);
    assert.ok(Number.isInteger(r.score) && r.score >= 0 && r.score <= 4);
  }
  assert.deepEqual(Object.keys(s("x")).sort(), ["acceptable", "hints", "score"]);
});

test("helpers: base64 and PEM", () => {
  const bytes = new Uint8Array(300).map((_, i) => (i * 7) & 0xff);
  assert.deepEqual(pki.fromBase64(pki.toBase64(bytes)), bytes);
  assert.deepEqual(pki.fromBase64("-_8"), new Uint8Array([0xfb, 0xff]));
  assert.deepEqual(pki.fromBase64(" +/8= \n"), new Uint8Array([0xfb, 0xff]));
  assert.equal(pki.toBase64(new Uint8Array([])), "");
  const pem = pki.toPem("CERTIFICATE", bytes);
  assert.ok(pem.split("\n").every((l) => l.length <= 64));
  assert.deepEqual(pki.fromPem(pem + pem), [bytes, bytes]);
  assert.throws(() => pki.fromBase64("a"), { code: "malformed" });
});

function indexOf(haystack, needle) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
