// The citizen portal's page script. The key is made here (WebCrypto, via
// pki.js), the request signed here, the PKCS#12 built here: only the CSR,
// the renewal request and the certificate cross the network. Every call
// carries the session's CSRF token. Texts come from the page (#messages).

const meta = (name) => document.querySelector(`meta[name="${name}"]`)?.content ?? "";
const csrf = meta("csrf-token");
const M = JSON.parse(document.getElementById("messages")?.textContent ?? "{}");
const t = (key) => M[key] ?? key;
let pkiModule;
const pki = async () => (pkiModule ??= await import(`/portal/assets/pki.js?v=${meta("pki-version")}`));

const status = document.getElementById("status");
function say(text, problem = false) {
  status.hidden = false;
  status.textContent = text;
  status.className = problem ? "problem" : "ok";
}

// A call of the portal's API: JSON, the CSRF token, and a refusal turned
// into its sentence (never raw JSON).
async function call(path, body) {
  let resp;
  try {
    resp = await fetch(path, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body ?? {}),
    });
  } catch {
    throw new Error(t("unavailable"));
  }
  let data = {};
  try {
    data = await resp.json();
  } catch {
    /* no JSON: the sentence below */
  }
  if (!resp.ok) {
    const e = new Error(data.sentence ?? t("refused_generic"));
    e.status = resp.status;
    throw e;
  }
  return data;
}

function pkiSentence(e) {
  const byCode = {
    wrong_password: "wrong_password",
    legacy: "legacy_file",
    malformed: "bad_file",
    unsupported: "bad_file",
    mismatch: "bad_file",
    no_webcrypto: "no_webcrypto",
  };
  return byCode[e?.code] ? t(byCode[e.code]) : e?.message || t("refused_generic");
}

function download(bytes, name) {
  const url = URL.createObjectURL(new Blob([bytes], { type: "application/x-pkcs12" }));
  const a = document.getElementById("download-link");
  a.href = url;
  a.download = name;
  document.getElementById("download").hidden = false;
  a.click();
}

const b64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));

// The password meter and its two fields.
const pw = document.getElementById("password");
const pw2 = document.getElementById("password2");
const meter = document.getElementById("strength");
const meterText = document.getElementById("strength-text");
pw?.addEventListener("input", async () => {
  const s = (await pki()).passwordStrength(pw.value);
  meter.value = s.score;
  meterText.textContent = pw.value ? t(`strength_${s.score}`) : "";
});

const renewPw = document.getElementById("renew-new-password");
renewPw?.addEventListener("input", async () => {
  document.getElementById("renew-strength").value = (await pki()).passwordStrength(renewPw.value).score;
});

async function checkPassword(a, b) {
  if (a !== b) throw new Error(t("passwords_differ"));
  if (!(await pki()).passwordStrength(a).acceptable) throw new Error(t("password_weak"));
}

// Request: key and CSR in the page, the certificate from the RA, the
// PKCS#12 built and downloaded here.
const form = document.getElementById("request");
form?.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const button = document.getElementById("request-button");
  button.disabled = true;
  try {
    await checkPassword(pw.value, pw2.value);
    const p = await pki();
    say(t("working_key"));
    const key = await p.newKeyAndCsr();
    say(t("working_request"));
    const profile = form.querySelector('input[name="profile"]:checked').value;
    const cert = await call("/portal/api/certificates", { csr: key.csrPem, profile });
    say(t("working_file"));
    const file = await p.buildPkcs12({
      privateKey: key.privateKey,
      certificateDer: b64(cert.der),
      chainDer: cert.chain.map(b64),
      password: pw.value,
      friendlyName: `Muhr ${cert.serial}`,
    });
    download(file, `muhr-${cert.serial}.p12`);
    pw.value = pw2.value = "";
    say(t("issued"));
    document.body.dataset.issued = cert.serial;
  } catch (e) {
    say(e.code ? pkiSentence(e) : e.message, true);
  } finally {
    button.disabled = false;
  }
});

// Suspend, revoke and renew: each after a confirmation in a dialog.
function ask(id, serial) {
  const d = document.getElementById(id);
  d.querySelectorAll(".dialog-serial").forEach((el) => (el.textContent = serial));
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.showModal();
  });
}

const done = (key) => {
  sessionStorage.setItem("muhr-said", key);
  location.reload();
};

document.querySelectorAll("button.suspend").forEach((b) =>
  b.addEventListener("click", async () => {
    if (!(await ask("confirm-suspend", b.dataset.serial))) return;
    try {
      await call(`/portal/api/certificates/${b.dataset.serial}/suspend`);
      done("done_suspend");
    } catch (e) {
      say(e.message, true);
    }
  }),
);

document.querySelectorAll("button.revoke").forEach((b) =>
  b.addEventListener("click", async () => {
    if (!(await ask("confirm-revoke", b.dataset.serial))) return;
    const reason = document.querySelector('#confirm-revoke input[name="reason"]:checked').value;
    try {
      await call(`/portal/api/certificates/${b.dataset.serial}/revoke`, { reason });
      done("done_revoke");
    } catch (e) {
      say(e.message, true);
    }
  }),
);

document.querySelectorAll("button.renew").forEach((b) =>
  b.addEventListener("click", async () => {
    if (!(await ask("renew-dialog", b.dataset.serial))) return;
    const file = document.getElementById("renew-file").files[0];
    const oldPassword = document.getElementById("renew-password").value;
    const newPassword = document.getElementById("renew-new-password").value;
    const newPassword2 = document.getElementById("renew-new-password2").value;
    try {
      if (!file) throw new Error(t("bad_file"));
      await checkPassword(newPassword, newPassword2);
      const p = await pki();
      const current = await p.readPkcs12(new Uint8Array(await file.arrayBuffer()), oldPassword);
      const { challenge } = await call("/portal/api/renewal/challenge", { serial: b.dataset.serial });
      say(t("working_key"));
      const key = await p.newKeyAndCsr();
      const request = await p.renewalRequest({
        privateKey: current.privateKey,
        certificateDer: current.certificateDer,
        newCsrDer: key.csrDer,
        challenge,
      });
      say(t("working_request"));
      const cert = await call("/portal/api/renewal", { signature: p.toBase64(request) });
      say(t("working_file"));
      const out = await p.buildPkcs12({
        privateKey: key.privateKey,
        certificateDer: b64(cert.der),
        chainDer: cert.chain.map(b64),
        password: newPassword,
        friendlyName: `Muhr ${cert.serial}`,
      });
      download(out, `muhr-${cert.serial}.p12`);
      say(t("renewed"));
      document.body.dataset.renewed = cert.serial;
    } catch (e) {
      say(e.code ? pkiSentence(e) : e.message, true);
    }
  }),
);

// A sentence left by the act before the reload.
const said = sessionStorage.getItem("muhr-said");
if (said) {
  sessionStorage.removeItem("muhr-said");
  say(t(said));
}
document.body.dataset.ready = "true";
