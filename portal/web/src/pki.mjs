// The citizen portal's cryptography, run in the browser (bundled to
// portal/assets/pki.js by portal/web/build.sh).
//
// - newKeyAndCsr: a P-256 key pair made by WebCrypto and a PKCS#10 request
//   signed with it (the private key never leaves the page).
// - buildPkcs12 / readPkcs12: the key, its certificate and the chain in a
//   PKCS#12 file that OpenSSL 3 (without -legacy) and Muhr's `muhr client`
//   (the Rust crate p12-keystore) read: PBES2 (PBKDF2-HMAC-SHA256, AES-256-CBC)
//   and a SHA-256 MAC.
// - renewalRequest: the CMC PKIData Muhr's renewal takes (ra/src/citizen/cmc.rs),
//   in a CMS SignedData signed with the key of the certificate being renewed.
// - passwordStrength and small encoding helpers.
//
// All ASN.1 is built with PKI.js and asn1js typed constructors; no DER is
// written by hand. Everything here is DER: Muhr's Rust side (the `der` crate)
// reads nothing else, so the places where PKI.js would write BER (split
// OCTET STRINGs) are avoided and SET OF elements are put in DER order.

import * as asn1js from "asn1js";
import * as pkijs from "pkijs";

/** PBKDF2 iterations and PKCS#12 MAC iterations of the files this module
 * writes (see README.md: why this number). */
export const PKCS12_ITERATIONS = 200000;
/** The most iterations a file may ask for: p12-keystore's cap, and a bound
 * on how long a hostile file can keep the page busy. */
export const MAX_ITERATIONS = 1000000;
const MIN_ITERATIONS = 100000;

const OID = {
  data: "1.2.840.113549.1.7.1",
  signedData: "1.2.840.113549.1.7.2",
  envelopedData: "1.2.840.113549.1.7.3",
  encryptedData: "1.2.840.113549.1.7.6",
  contentType: "1.2.840.113549.1.9.3",
  messageDigest: "1.2.840.113549.1.9.4",
  friendlyName: "1.2.840.113549.1.9.20",
  localKeyId: "1.2.840.113549.1.9.21",
  x509Certificate: "1.2.840.113549.1.9.22.1",
  keyBag: "1.2.840.113549.1.12.10.1.1",
  shroudedKeyBag: "1.2.840.113549.1.12.10.1.2",
  certBag: "1.2.840.113549.1.12.10.1.3",
  pbes2: "1.2.840.113549.1.5.13",
  pbkdf2: "1.2.840.113549.1.5.12",
  hmacWithSHA1: "1.2.840.113549.2.7",
  hmacWithSHA256: "1.2.840.113549.2.9",
  hmacWithSHA384: "1.2.840.113549.2.10",
  hmacWithSHA512: "1.2.840.113549.2.11",
  aes128cbc: "2.16.840.1.101.3.4.1.2",
  aes192cbc: "2.16.840.1.101.3.4.1.22",
  aes256cbc: "2.16.840.1.101.3.4.1.42",
  sha1: "1.3.14.3.2.26",
  sha256: "2.16.840.1.101.3.4.2.1",
  sha384: "2.16.840.1.101.3.4.2.2",
  sha512: "2.16.840.1.101.3.4.2.3",
  ecPublicKey: "1.2.840.10045.2.1",
  p256: "1.2.840.10045.3.1.7",
  p384: "1.3.132.0.34",
  commonName: "2.5.4.3",
  // RFC 5272: id-cct-PKIData and id-cmc-recipientNonce.
  pkiData: "1.3.6.1.5.5.7.12.2",
  recipientNonce: "1.3.6.1.5.5.7.7.7",
};

const PRF_HASH = {
  [OID.hmacWithSHA256]: "SHA-256",
  [OID.hmacWithSHA384]: "SHA-384",
  [OID.hmacWithSHA512]: "SHA-512",
};
const AES_BITS = { [OID.aes128cbc]: 128, [OID.aes192cbc]: 192, [OID.aes256cbc]: 256 };
const MAC_HASH = { [OID.sha256]: "SHA-256", [OID.sha384]: "SHA-384", [OID.sha512]: "SHA-512" };
const CURVE = { [OID.p256]: "P-256", [OID.p384]: "P-384" };

/** An error whose `code` the page can translate: `wrong_password`,
 * `legacy`, `malformed`, `unsupported`, `mismatch`, `no_webcrypto`. */
export class PkiError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "PkiError";
    this.code = code;
  }
}

let engine = null;

/** WebCrypto, and PKI.js set to use it. */
function webCrypto() {
  const c = globalThis.crypto;
  if (!c || !c.subtle) {
    throw new PkiError(
      "no_webcrypto",
      "This browser offers no WebCrypto here (the page must be opened over HTTPS)",
    );
  }
  if (!engine) {
    engine = new pkijs.CryptoEngine({ name: "muhr", crypto: c });
    pkijs.setEngine("muhr", engine);
  }
  return c;
}

const u8 = (b) => (b instanceof Uint8Array ? b : new Uint8Array(b));
/** A fresh ArrayBuffer holding exactly `bytes` (asn1js and PKI.js want one). */
const buf = (bytes) => {
  const b = u8(bytes);
  const out = new Uint8Array(b.length); // a copy (a Node Buffer's slice() is a view)
  out.set(b);
  return out.buffer;
};

function parseDer(bytes, what) {
  const asn = asn1js.fromBER(buf(bytes));
  if (asn.offset === -1) throw new PkiError("malformed", `${what}: not valid ASN.1 (${asn.result.error})`);
  return asn.result;
}

/** `list` of PKI.js objects in DER SET OF order (by their encodings). */
function derSorted(list) {
  const enc = list.map((o) => [o, u8(o.toSchema().toBER(false))]);
  enc.sort(([, a], [, b]) => {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  });
  return enc.map(([o]) => o);
}

function indexOf(haystack, needle) {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

function sameBytes(a, b) {
  return a.length === b.length && indexOf(a, b) === 0;
}

// ---------------------------------------------------------------------------
// Encoding helpers.

/** Base64 (standard alphabet, padded) of `bytes`. */
export function toBase64(bytes) {
  const b = u8(bytes);
  let s = "";
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  return btoa(s);
}

/** The bytes of base64 text: standard or URL-safe alphabet, padding and
 * white space optional. */
export function fromBase64(str) {
  let s = String(str).replace(/\s+/g, "").replace(/-/g, "+").replace(/_/g, "/");
  if (s.length % 4 === 1) throw new PkiError("malformed", "not base64 text");
  while (s.length % 4) s += "=";
  let bin;
  try {
    bin = atob(s);
  } catch {
    throw new PkiError("malformed", "not base64 text");
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** PEM text of `der` under `label` ("CERTIFICATE", "CERTIFICATE REQUEST"). */
export function toPem(label, der) {
  const b64 = toBase64(der);
  const lines = [];
  for (let i = 0; i < b64.length; i += 64) lines.push(b64.slice(i, i + 64));
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** The DER of each PEM block in `text` (a certificate chain, say), in order. */
export function fromPem(text) {
  const out = [];
  const re = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(fromBase64(m[2]));
  return out;
}

// ---------------------------------------------------------------------------
// 1. Key and certificate request.

/** A new P-256 key pair (extractable: it goes into the PKCS#12 file made in
 * the page, and nowhere else) and a PKCS#10 request signed with it
 * (ecdsa-with-SHA256). The subject is a placeholder: Muhr ignores the
 * request's subject and writes the one the identity system vouches for. */
export async function newKeyAndCsr() {
  const c = webCrypto();
  const { privateKey, publicKey } = await c.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ]);
  const csr = new pkijs.CertificationRequest({ version: 0 });
  csr.subject.typesAndValues.push(
    new pkijs.AttributeTypeAndValue({ type: OID.commonName, value: new asn1js.Utf8String({ value: "muhr-portal" }) }),
  );
  await csr.subjectPublicKeyInfo.importKey(publicKey, engine);
  // An empty attribute set, [0] {}: PKCS#10 makes it mandatory, and Muhr's
  // parser (x509-cert) refuses a request without it.
  csr.attributes = [];
  await csr.sign(privateKey, "SHA-256", engine);
  const csrDer = new Uint8Array(csr.toSchema(false).toBER(false));
  return { privateKey, publicKey, csrDer, csrPem: toPem("CERTIFICATE REQUEST", csrDer) };
}

// ---------------------------------------------------------------------------
// 2. PKCS#12, written.

const utf8 = (s) => new TextEncoder().encode(s);

function checkIterations(n, what) {
  if (!Number.isInteger(n) || n < 1) throw new PkiError("malformed", `${what}: bad iteration count`);
  if (n > MAX_ITERATIONS) {
    throw new PkiError("unsupported", `${what}: ${n} iterations is more than ${MAX_ITERATIONS}; refused`);
  }
}

/** PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC over `plain`: the
 * AlgorithmIdentifier and the ciphertext. The salt is 16 bytes: NIST SP
 * 800-132's minimum, and within what p12-keystore reads (at most 32; PKI.js's
 * own helper writes 64, which it refuses). */
async function pbes2Encrypt(plain, password, iterations) {
  const c = webCrypto();
  const salt = c.getRandomValues(new Uint8Array(16));
  const iv = c.getRandomValues(new Uint8Array(16));
  const base = await c.subtle.importKey("raw", password, "PBKDF2", false, ["deriveKey"]);
  const key = await c.subtle.deriveKey(
    { name: "PBKDF2", hash: "SHA-256", salt, iterations },
    base,
    { name: "AES-CBC", length: 256 },
    false,
    ["encrypt"],
  );
  const ciphertext = new Uint8Array(await c.subtle.encrypt({ name: "AES-CBC", iv }, key, plain));
  const params = new pkijs.PBES2Params({
    keyDerivationFunc: new pkijs.AlgorithmIdentifier({
      algorithmId: OID.pbkdf2,
      algorithmParams: new pkijs.PBKDF2Params({
        salt: new asn1js.OctetString({ valueHex: buf(salt) }),
        iterationCount: iterations,
        prf: new pkijs.AlgorithmIdentifier({ algorithmId: OID.hmacWithSHA256, algorithmParams: new asn1js.Null() }),
      }).toSchema(),
    }),
    encryptionScheme: new pkijs.AlgorithmIdentifier({
      algorithmId: OID.aes256cbc,
      algorithmParams: new asn1js.OctetString({ valueHex: buf(iv) }),
    }),
  });
  return {
    algorithm: new pkijs.AlgorithmIdentifier({ algorithmId: OID.pbes2, algorithmParams: params.toSchema() }),
    ciphertext,
  };
}

function bagAttributes(localKeyId, friendlyName) {
  const attrs = [
    new pkijs.Attribute({ type: OID.localKeyId, values: [new asn1js.OctetString({ valueHex: buf(localKeyId) })] }),
  ];
  if (friendlyName) {
    attrs.push(new pkijs.Attribute({ type: OID.friendlyName, values: [new asn1js.BmpString({ value: friendlyName })] }));
  }
  return derSorted(attrs);
}

function certBag(der, attributes) {
  const p = {
    bagId: OID.certBag,
    bagValue: new pkijs.CertBag({
      certId: OID.x509Certificate,
      certValue: new asn1js.OctetString({ valueHex: buf(der) }),
    }),
  };
  if (attributes) p.bagAttributes = attributes;
  return new pkijs.SafeBag(p);
}

/** A PKCS#12 file (DER) holding `privateKey` (a PKCS8ShroudedKeyBag), its
 * certificate and the chain (CertBags in an EncryptedData, as OpenSSL 3
 * writes them: the certificates name the citizen, so they are not left in
 * clear), the key and its certificate linked by localKeyId (SHA-256 of the
 * certificate) and named `friendlyName`; PBES2 (PBKDF2-HMAC-SHA256,
 * AES-256-CBC) and a SHA-256 MAC, `iterations` each. */
export async function buildPkcs12({
  privateKey,
  certificateDer,
  chainDer = [],
  password,
  friendlyName = "Muhr",
  iterations = PKCS12_ITERATIONS,
}) {
  const c = webCrypto();
  if (typeof password !== "string" || password.length === 0) {
    throw new PkiError("malformed", "a password is required");
  }
  if (!Number.isInteger(iterations) || iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) {
    throw new PkiError("malformed", `iterations must be between ${MIN_ITERATIONS} and ${MAX_ITERATIONS}`);
  }
  const leaf = u8(certificateDer);
  for (const [i, der] of [leaf, ...chainDer.map(u8)].entries()) {
    try {
      pkijs.Certificate.fromBER(buf(der));
    } catch {
      throw new PkiError("malformed", `certificate ${i} is not an X.509 certificate`);
    }
  }
  const pw = utf8(password);
  const localKeyId = new Uint8Array(await c.subtle.digest("SHA-256", leaf));
  const attributes = bagAttributes(localKeyId, friendlyName);

  const pkcs8 = new Uint8Array(await c.subtle.exportKey("pkcs8", privateKey));
  const key = await pbes2Encrypt(pkcs8, pw, iterations);
  pkcs8.fill(0);
  const keySafe = new pkijs.SafeContents({
    safeBags: [
      new pkijs.SafeBag({
        bagId: OID.shroudedKeyBag,
        bagValue: new pkijs.PKCS8ShroudedKeyBag({
          encryptionAlgorithm: key.algorithm,
          encryptedData: new asn1js.OctetString({ valueHex: buf(key.ciphertext) }),
        }),
        bagAttributes: attributes,
      }),
    ],
  });

  const certSafe = new pkijs.SafeContents({
    safeBags: [certBag(leaf, attributes), ...chainDer.map((d) => certBag(d))],
  });
  const certs = await pbes2Encrypt(new Uint8Array(certSafe.toSchema().toBER(false)), pw, iterations);
  const encryptedData = new pkijs.EncryptedData({
    version: 0,
    encryptedContentInfo: new pkijs.EncryptedContentInfo({
      contentType: OID.data,
      contentEncryptionAlgorithm: certs.algorithm,
      encryptedContent: new asn1js.OctetString({ valueHex: buf(certs.ciphertext) }),
      // One primitive OCTET STRING (DER), not 1 KiB pieces (BER).
      disableSplit: true,
    }),
  });

  const authenticatedSafe = new pkijs.AuthenticatedSafe({
    safeContents: [
      new pkijs.ContentInfo({ contentType: OID.encryptedData, content: encryptedData.toSchema() }),
      new pkijs.ContentInfo({
        contentType: OID.data,
        content: new asn1js.OctetString({ valueHex: keySafe.toSchema().toBER(false) }),
      }),
    ],
  });
  const pfx = new pkijs.PFX({ parsedValue: { integrityMode: 0, authenticatedSafe } });
  await pfx.makeInternalValues(
    { password: buf(pw), iterations, pbkdf2HashAlgorithm: "SHA-256", hmacHashAlgorithm: "SHA-256" },
    engine,
  );
  return new Uint8Array(pfx.toSchema().toBER(false));
}

// ---------------------------------------------------------------------------
// 3. PKCS#12, read.

const LEGACY =
  "This file uses old algorithms (RC2, 3DES or SHA-1) that are no longer accepted; " +
  "export it again with current software (OpenSSL 3 without -legacy, or Muhr)";

/** PBES2 parameters of `algorithm` (an AlgorithmIdentifier), checked: PBKDF2
 * with HMAC-SHA-2 and AES-CBC; the legacy PKCS#12 schemes are refused. */
function pbes2Params(algorithm, what) {
  if (algorithm.algorithmId !== OID.pbes2) {
    if (algorithm.algorithmId.startsWith("1.2.840.113549.1.12.1.") || algorithm.algorithmId.startsWith("1.2.840.113549.1.5.")) {
      throw new PkiError("legacy", `${LEGACY} (${what}: ${algorithm.algorithmId})`);
    }
    throw new PkiError("unsupported", `${what}: encryption ${algorithm.algorithmId} is not supported`);
  }
  let pbes2;
  let kdf;
  try {
    pbes2 = new pkijs.PBES2Params({ schema: algorithm.algorithmParams });
  } catch {
    throw new PkiError("malformed", `${what}: bad PBES2 parameters`);
  }
  if (pbes2.keyDerivationFunc.algorithmId !== OID.pbkdf2) {
    throw new PkiError("unsupported", `${what}: key derivation ${pbes2.keyDerivationFunc.algorithmId} is not supported`);
  }
  try {
    kdf = new pkijs.PBKDF2Params({ schema: pbes2.keyDerivationFunc.algorithmParams });
  } catch {
    throw new PkiError("malformed", `${what}: bad PBKDF2 parameters`);
  }
  const prf = kdf.prf ? kdf.prf.algorithmId : OID.hmacWithSHA1;
  if (prf === OID.hmacWithSHA1) throw new PkiError("legacy", `${LEGACY} (${what}: PBKDF2 with HMAC-SHA1)`);
  const hash = PRF_HASH[prf];
  if (!hash) throw new PkiError("unsupported", `${what}: PBKDF2 PRF ${prf} is not supported`);
  const bits = AES_BITS[pbes2.encryptionScheme.algorithmId];
  if (!bits) {
    throw new PkiError("legacy", `${LEGACY} (${what}: cipher ${pbes2.encryptionScheme.algorithmId})`);
  }
  const ivBlock = pbes2.encryptionScheme.algorithmParams;
  if (!(ivBlock instanceof asn1js.OctetString) || ivBlock.valueBlock.valueHexView.length !== 16) {
    throw new PkiError("malformed", `${what}: bad AES-CBC IV`);
  }
  if (!(kdf.salt instanceof asn1js.OctetString)) throw new PkiError("unsupported", `${what}: PBKDF2 salt is not an OCTET STRING`);
  checkIterations(kdf.iterationCount, what);
  return {
    hash,
    bits,
    salt: kdf.salt.valueBlock.valueHexView.slice(),
    iterations: kdf.iterationCount,
    iv: ivBlock.valueBlock.valueHexView.slice(),
  };
}

async function pbes2Decrypt(algorithm, ciphertext, password, what) {
  const c = webCrypto();
  const p = pbes2Params(algorithm, what);
  const base = await c.subtle.importKey("raw", password, "PBKDF2", false, ["deriveKey"]);
  const key = await c.subtle.deriveKey(
    { name: "PBKDF2", hash: p.hash, salt: p.salt, iterations: p.iterations },
    base,
    { name: "AES-CBC", length: p.bits },
    false,
    ["decrypt"],
  );
  try {
    return new Uint8Array(await c.subtle.decrypt({ name: "AES-CBC", iv: p.iv }, key, ciphertext));
  } catch {
    throw new PkiError("wrong_password", `The password is wrong: the ${what} cannot be decrypted with it`);
  }
}

function attribute(bag, oid) {
  for (const a of bag.bagAttributes || []) if (a.type === oid && a.values.length) return a.values[0];
  return undefined;
}

function safeContentsOf(bytes, what) {
  try {
    return pkijs.SafeContents.fromBER(buf(bytes));
  } catch {
    throw new PkiError("malformed", `${what}: not PKCS#12 SafeContents`);
  }
}

/** The uncompressed point of an EC public key in a certificate. */
function certificatePoint(cert) {
  const spki = cert.subjectPublicKeyInfo;
  if (spki.algorithm.algorithmId !== OID.ecPublicKey) return null;
  return spki.subjectPublicKey.valueBlock.valueHexView;
}

/** Reads a PKCS#12 file made by buildPkcs12, by `openssl pkcs12 -export`
 * (OpenSSL 3 defaults) or by p12-keystore (`muhr client`): its MAC is
 * checked first (a wrong password says so), legacy algorithms are refused.
 * Returns the private key (a non-extractable CryptoKey for ECDSA signing),
 * its certificate and the other certificates (issuer first). */
export async function readPkcs12(bytes, password) {
  const c = webCrypto();
  const pw = utf8(String(password ?? ""));
  let pfx;
  try {
    pfx = new pkijs.PFX({ schema: parseDer(bytes, "PKCS#12") });
  } catch {
    throw new PkiError("malformed", "This is not a PKCS#12 file (.p12 or .pfx)");
  }
  if (pfx.authSafe.contentType !== OID.data) {
    throw new PkiError("unsupported", "PKCS#12 files protected by a public key rather than a password are not supported");
  }
  if (!pfx.macData) {
    throw new PkiError("unsupported", "This PKCS#12 file has no integrity check (MAC); refused");
  }
  const macOid = pfx.macData.mac.digestAlgorithm.algorithmId;
  if (macOid === OID.sha1) throw new PkiError("legacy", `${LEGACY} (MAC with SHA-1)`);
  const macHash = MAC_HASH[macOid];
  if (!macHash) throw new PkiError("unsupported", `MAC digest ${macOid} is not supported`);
  const macIterations = pfx.macData.iterations ?? 1;
  checkIterations(macIterations, "MAC");
  const content = pfx.authSafe.content;
  if (!(content instanceof asn1js.OctetString)) throw new PkiError("malformed", "PKCS#12: bad authSafe content");
  const authSafeBytes = content.getValue();
  const macOk = await engine.verifyDataStampedWithPassword({
    password: buf(pw),
    hashAlgorithm: macHash,
    salt: buf(pfx.macData.macSalt.valueBlock.valueHexView),
    iterationCount: macIterations,
    contentToVerify: authSafeBytes,
    signatureToVerify: buf(pfx.macData.mac.digest.valueBlock.valueHexView),
  });
  if (!macOk) {
    throw new PkiError("wrong_password", "The password is wrong (or the file is damaged): its integrity check fails");
  }

  let authenticatedSafe;
  try {
    authenticatedSafe = pkijs.AuthenticatedSafe.fromBER(authSafeBytes);
  } catch {
    throw new PkiError("malformed", "PKCS#12: bad AuthenticatedSafe");
  }
  const keys = [];
  const certs = [];
  for (const ci of authenticatedSafe.safeContents) {
    let safe;
    if (ci.contentType === OID.data) {
      safe = safeContentsOf(ci.content.getValue(), "PKCS#12 data");
    } else if (ci.contentType === OID.encryptedData) {
      let eci;
      try {
        eci = new pkijs.EncryptedData({ schema: ci.content }).encryptedContentInfo;
      } catch {
        throw new PkiError("malformed", "PKCS#12: bad EncryptedData");
      }
      const plain = await pbes2Decrypt(eci.contentEncryptionAlgorithm, eci.getEncryptedContent(), pw, "certificates");
      safe = safeContentsOf(plain, "PKCS#12 encrypted data");
    } else {
      throw new PkiError("unsupported", `PKCS#12 content ${ci.contentType} is not supported`);
    }
    for (const bag of safe.safeBags) {
      const idBlock = attribute(bag, OID.localKeyId);
      const localKeyId = idBlock instanceof asn1js.OctetString ? idBlock.valueBlock.valueHexView.slice() : null;
      if (bag.bagId === OID.shroudedKeyBag) {
        const pkcs8 = await pbes2Decrypt(
          bag.bagValue.encryptionAlgorithm,
          bag.bagValue.encryptedData.getValue(),
          pw,
          "private key",
        );
        keys.push({ pkcs8, localKeyId });
      } else if (bag.bagId === OID.keyBag) {
        keys.push({ pkcs8: new Uint8Array(bag.bagValue.toSchema().toBER(false)), localKeyId });
      } else if (bag.bagId === OID.certBag) {
        if (bag.bagValue.certId !== OID.x509Certificate) continue;
        const der = bag.bagValue.certValue.getValue
          ? new Uint8Array(bag.bagValue.certValue.getValue())
          : new Uint8Array(bag.bagValue.certValue.valueBeforeDecodeView);
        let cert;
        try {
          cert = pkijs.Certificate.fromBER(buf(der));
        } catch {
          throw new PkiError("malformed", "PKCS#12: a certificate in it is not X.509");
        }
        certs.push({ der, cert, localKeyId });
      }
    }
  }
  if (keys.length === 0) throw new PkiError("malformed", "There is no private key in this PKCS#12 file");
  if (certs.length === 0) throw new PkiError("malformed", "There is no certificate in this PKCS#12 file");

  for (const k of keys) {
    let info;
    try {
      info = pkijs.PrivateKeyInfo.fromBER(buf(k.pkcs8));
    } catch {
      throw new PkiError("malformed", "PKCS#12: the private key is not PKCS#8");
    }
    if (info.privateKeyAlgorithm.algorithmId !== OID.ecPublicKey) {
      throw new PkiError("unsupported", "Only ECDSA keys (P-256, P-384) are supported");
    }
    const params = info.privateKeyAlgorithm.algorithmParams;
    const namedCurve = params instanceof asn1js.ObjectIdentifier ? CURVE[params.valueBlock.toString()] : undefined;
    if (!namedCurve) throw new PkiError("unsupported", "Only ECDSA keys on P-256 or P-384 are supported");
    const alg = { name: "ECDSA", namedCurve };
    // The certificate for this key: by localKeyId, else by public key.
    const probe = await c.subtle.importKey("pkcs8", k.pkcs8, alg, true, ["sign"]);
    const jwk = await c.subtle.exportKey("jwk", probe);
    const point = new Uint8Array([4, ...fromBase64(jwk.x), ...fromBase64(jwk.y)]);
    const ours = (x) => {
      const p = certificatePoint(x.cert);
      return p !== null && sameBytes(p, point);
    };
    const leaf =
      certs.find((x) => k.localKeyId && x.localKeyId && sameBytes(x.localKeyId, k.localKeyId) && ours(x)) ||
      certs.find(ours);
    if (!leaf) continue;
    const privateKey = await c.subtle.importKey("pkcs8", k.pkcs8, alg, false, ["sign"]);
    k.pkcs8.fill(0);
    // The chain: issuer by issuer from the leaf, then whatever else is there.
    const rest = certs.filter((x) => x !== leaf);
    const chain = [];
    for (let at = leaf; ; ) {
      const i = rest.findIndex((x) => x.cert.subject.isEqual(at.cert.issuer) && !at.cert.subject.isEqual(at.cert.issuer));
      if (i < 0) break;
      at = rest.splice(i, 1)[0];
      chain.push(at);
    }
    return { privateKey, certificateDer: leaf.der, chainDer: [...chain, ...rest].map((x) => x.der) };
  }
  throw new PkiError("mismatch", "This PKCS#12 file holds no certificate for its private key");
}

// ---------------------------------------------------------------------------
// 4. Renewal request.

/** The CMC PKIData (RFC 5272) Muhr's renewal accepts, DER: one
 * TaggedRequest tcr [0] { bodyPartID 1, the PKCS#10 request as given }, one
 * control id-cmc-recipientNonce (bodyPartID 2) whose one value is an OCTET
 * STRING of the challenge's UTF-8 bytes, no cmsSequence, no
 * otherMsgSequence. */
export function pkiData(csrDer, challenge) {
  const nonce = typeof challenge === "string" ? utf8(challenge) : u8(challenge);
  const pki = new asn1js.Sequence({
    value: [
      // controlSequence
      new asn1js.Sequence({
        value: [
          new asn1js.Sequence({
            value: [
              new asn1js.Integer({ value: 2 }),
              new asn1js.ObjectIdentifier({ value: OID.recipientNonce }),
              new asn1js.Set({ value: [new asn1js.OctetString({ valueHex: buf(nonce) })] }),
            ],
          }),
        ],
      }),
      // reqSequence: TaggedRequest ::= CHOICE { tcr [0] TaggedCertificationRequest, ... }
      // (implicit tags: [0] replaces the SEQUENCE tag of TaggedCertificationRequest).
      new asn1js.Sequence({
        value: [
          new asn1js.Constructed({
            idBlock: { tagClass: 3, tagNumber: 0 },
            value: [
              new asn1js.Integer({ value: 1 }),
              // The request as decoded; re-encoded to its own bytes (checked
              // below): its signature covers exactly them.
              parseDer(csrDer, "certification request"),
            ],
          }),
        ],
      }),
      new asn1js.Sequence({ value: [] }), // cmsSequence
      new asn1js.Sequence({ value: [] }), // otherMsgSequence
    ],
  });
  const der = new Uint8Array(pki.toBER(false));
  if (indexOf(der, u8(csrDer)) < 0) throw new PkiError("malformed", "the certification request is not DER");
  return der;
}

/** A renewal request for Muhr (`POST /api/v1/certificates/renew`, base64 in
 * `signature`): a CMS SignedData (DER ContentInfo) whose eContentType is
 * id-cct-PKIData and whose content is [`pkiData`](newCsrDer, challenge),
 * signed with `privateKey`, the key of the certificate being renewed
 * (`certificateDer`, carried in the message and named as the signer by
 * issuer and serial number); signed attributes content-type and
 * message-digest; SHA-256 with ECDSA. `challenge` is the string the server's
 * renewal challenge answer gave, as is. */
export async function renewalRequest({ privateKey, certificateDer, newCsrDer, challenge }) {
  const c = webCrypto();
  if (typeof challenge !== "string" || challenge.length === 0) {
    throw new PkiError("malformed", "the renewal challenge (a string from the server) is required");
  }
  const csrBytes = u8(newCsrDer);
  try {
    const csr = pkijs.CertificationRequest.fromBER(buf(csrBytes));
    if (!sameBytes(new Uint8Array(csr.toSchema().toBER(false)), csrBytes)) throw new Error("not DER");
  } catch {
    throw new PkiError("malformed", "the new request is not a DER PKCS#10 certification request");
  }
  const certBytes = u8(certificateDer);
  let cert;
  try {
    cert = pkijs.Certificate.fromBER(buf(certBytes));
  } catch {
    throw new PkiError("malformed", "the certificate to renew is not an X.509 certificate");
  }
  const content = pkiData(csrBytes, challenge);
  const digest = await c.subtle.digest("SHA-256", content);
  const signed = new pkijs.SignedData({
    version: 3, // RFC 5652 5.1: the content is not id-data
    encapContentInfo: new pkijs.EncapsulatedContentInfo({ eContentType: OID.pkiData }),
    certificates: [cert],
    signerInfos: [
      new pkijs.SignerInfo({
        version: 1, // issuerAndSerialNumber
        sid: new pkijs.IssuerAndSerialNumber({ issuer: cert.issuer, serialNumber: cert.serialNumber }),
        signedAttrs: new pkijs.SignedAndUnsignedAttributes({
          type: 0,
          attributes: derSorted([
            new pkijs.Attribute({
              type: OID.contentType,
              values: [new asn1js.ObjectIdentifier({ value: OID.pkiData })],
            }),
            new pkijs.Attribute({
              type: OID.messageDigest,
              values: [new asn1js.OctetString({ valueHex: digest })],
            }),
          ]),
        }),
      }),
    ],
  });
  // Set after construction: PKI.js's constructor would turn the OCTET
  // STRING into a constructed one (BER), which Muhr's DER reader refuses.
  signed.encapContentInfo.eContent = new asn1js.OctetString({ valueHex: buf(content) });
  await signed.sign(privateKey, 0, "SHA-256", undefined, engine);
  const der = new Uint8Array(
    new pkijs.ContentInfo({ contentType: OID.signedData, content: signed.toSchema(true) }).toSchema().toBER(false),
  );
  if (indexOf(der, certBytes) < 0 || indexOf(der, content) < 0) {
    throw new PkiError("malformed", "internal: the certificate or the request was re-encoded");
  }
  // The key must be the certificate's: check the message as it will be sent
  // (read back, so the signed attributes are the encoded ones).
  const back = new pkijs.SignedData({ schema: pkijs.ContentInfo.fromBER(buf(der)).content });
  const ok = await back.verify({ signer: 0, checkChain: false }, engine).catch(() => false);
  if (ok !== true) {
    throw new PkiError("mismatch", "The private key does not belong to the certificate being renewed");
  }
  return der;
}

// ---------------------------------------------------------------------------
// 5. Password strength.

// Keyboard rows and alphabets in order (Latin, Uzbek/Russian Cyrillic), for
// spotting runs such as "abcd", "4321", "qwerty", "йцукен".
const RUNS = [
  "abcdefghijklmnopqrstuvwxyz",
  "0123456789",
  "qwertyuiop",
  "asdfghjkl",
  "zxcvbnm",
  "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
  "йцукенгшщзхъ",
  "фывапролджэ",
  "ячсмитьбю",
];
// A few words that start many weak passwords (no dictionary is downloaded).
const COMMON = [
  "password", "passw0rd", "parol", "qwerty", "letmein", "welcome", "admin", "iloveyou", "sevgi",
  "uzbekistan", "ozbekiston", "toshkent", "tashkent", "muhr", "пароль", "привет", "любовь",
];

/** How strong a password looks, from its length and character classes, with
 * repeats, runs (abc, 321, qwerty) and a few common words counted as one
 * character: `score` 0 (very weak) to 4 (strong); `acceptable` needs at
 * least 8 characters and a score of 2. `hints` name what weakens it. */
export function passwordStrength(password) {
  const s = String(password ?? "");
  const chars = Array.from(s);
  const lower = s.toLowerCase();
  const hints = [];
  if (chars.length < 8) hints.push("too_short");

  // Character classes and the pool they give.
  let pool = 0;
  if (/[a-z]/.test(s)) pool += 26;
  if (/[A-Z]/.test(s)) pool += 26;
  if (/[0-9]/.test(s)) pool += 10;
  if (/[\x20-\x2f\x3a-\x40\x5b-\x60\x7b-\x7e]/.test(s)) pool += 33;
  if (/[^\x00-\x7f]/.test(s)) pool += 40;
  const classes = [/[a-z]/, /[A-Z]/, /[0-9]/, /[^a-zA-Z0-9]/].filter((r) => r.test(s)).length;
  if (chars.length && classes < 2) hints.push("few_classes");

  // Effective length: each character counts 1, except one that repeats the
  // previous one, one that continues a run of three or more (abc, 987), and
  // the letters of a common word after its first.
  const weight = chars.map(() => 1);
  const lc = Array.from(lower);
  for (let i = 1; i < lc.length; i++) {
    if (lc[i] === lc[i - 1]) {
      weight[i] = 0;
      if (!hints.includes("repeat")) hints.push("repeat");
      continue;
    }
    if (i < 2) continue;
    for (const run of RUNS) {
      const a = run.indexOf(lc[i - 2]);
      const b = run.indexOf(lc[i - 1]);
      const c = run.indexOf(lc[i]);
      if (a >= 0 && b >= 0 && c >= 0 && Math.abs(b - a) === 1 && c - b === b - a) {
        weight[i] = 0;
        if (!hints.includes("sequence")) hints.push("sequence");
        break;
      }
    }
  }
  for (const w of COMMON) {
    for (let at = lower.indexOf(w); at >= 0; at = lower.indexOf(w, at + 1)) {
      const start = Array.from(lower.slice(0, at)).length;
      const n = Array.from(w).length;
      for (let j = start + 1; j < start + n; j++) weight[j] = 0;
      if (!hints.includes("common")) hints.push("common");
    }
  }
  // A password made of one chunk said again ("abc1abc1") is as strong as the chunk.
  for (let unit = 1; unit <= chars.length / 2; unit++) {
    if (chars.length % unit === 0 && lower === lower.slice(0, unit).repeat(chars.length / unit)) {
      for (let j = unit; j < chars.length; j++) weight[j] = 0;
      if (!hints.includes("repeat")) hints.push("repeat");
      break;
    }
  }
  const effective = weight.reduce((a, b) => a + b, 0);
  const bits = pool > 0 ? effective * Math.log2(pool) : 0;
  const score = bits < 30 ? 0 : bits < 40 ? 1 : bits < 55 ? 2 : bits < 70 ? 3 : 4;
  return { score, acceptable: chars.length >= 8 && score >= 2, hints };
}
