//! PKCS#11 key store (production: a network or PCIe HSM; tests: SoftHSM2).
//!
//! Design choices, each forced by a real module's behaviour:
//! - the module is initialised once per process and path (`OnceLock`), with
//!   `OS_LOCKING_OK`, because a second `C_Initialize` in one process fails;
//! - a fixed pool of logged-in sessions, each behind its own mutex, because a
//!   `Session` is `Send` but not `Sync` and one session would serialise all signing;
//! - a call that fails because the session or the login is gone (closed underneath
//!   us, token logged out, device reset) reopens that session, logs in again and
//!   retries once; a second failure is returned as an error, never as a signature;
//! - when that is not enough (the token is gone, the device errs, no session
//!   opens) the store marks itself down at once: every call fails fast with
//!   [`HsmError::Unavailable`] (503 to clients, never a hang or a 500) while a
//!   background thread re-initialises the module (`C_Finalize`, `C_Initialize`:
//!   SoftHSM and network HSM clients keep per-process state that a lost token
//!   leaves broken) and reopens the slot and a session every `retry` until it
//!   succeeds; signing then resumes without a restart;
//! - ECDSA is signed raw (`CKM_ECDSA`, which every module has) over a digest made
//!   here, and the `r‖s` result converted to DER;
//! - each session signs with its own session-object copy of the private key
//!   (`C_CopyObject` with `CKA_TOKEN` false) when the module allows it. The copy
//!   stays inside the module, as sensitive and unextractable as the original, and
//!   is destroyed with its session. SoftHSM re-reads a token object's generation
//!   file for every attribute it consults, about twenty system calls per
//!   signature; a session object is held in memory. A module that refuses the copy
//!   (`CKA_COPYABLE` false, or a policy) is used through the token object, and
//!   `copy_keys_to_session = false` turns the copy off where policy forbids it.
//!   A copy outlives nothing: every `key_recheck` the session looks at the token
//!   object again, and once that is gone (the key destroyed) the copy is
//!   destroyed too and signing fails.
//!
//! Longer than 600 lines on purpose: the session pool, the recovery state
//! machine and the signing path share one lock and one set of invariants
//! (a session is used only while the module is up; recovery finalizes the
//! module only when no session is out); reading them in one place is how
//! they are checked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use der::asn1::{BitString, OctetString, UintRef};
use der::{Decode, Encode};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use zeroize::Zeroizing;

use crate::algorithm::{RsaPublicKey, ecdsa_raw_to_der};
use crate::{HsmError, KeySigner, KeySpec, KeyStore, Result};

/// What a PKCS#11 key store needs; the PIN is already resolved from its source.
pub struct Pkcs11Config {
    /// The vendor's PKCS#11 library (`.so`), loaded and initialised once per
    /// process.
    pub module: PathBuf,
    /// The label the token was initialised with; trailing spaces do not count.
    pub token_label: String,
    /// The user PIN. Once the token refuses it, nothing tries it again until
    /// a restart, so the token does not lock.
    pub pin: Zeroizing<String>,
    /// How many logged-in sessions sign side by side; held to 1 to 64.
    pub sessions: usize,
    /// Sign with each session's own copy of the private key (`C_CopyObject`,
    /// as unextractable as the original) rather than the token object. False
    /// where policy forbids copies.
    pub copy_keys_to_session: bool,
    /// How long a session signs with its copy before it checks that the token
    /// object is still there.
    pub key_recheck: Duration,
    /// While the token is down, how often it is tried again.
    pub retry: Duration,
}

fn ck(op: &'static str) -> impl Fn(CkError) -> HsmError {
    move |e| HsmError::Pkcs11 {
        op,
        rv: e.to_string(),
    }
}

/// One context per module path for the whole process.
pub fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut map = CONTEXTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| {
        HsmError::Config(format!(
            "cannot load PKCS#11 module {}: {e}",
            module.display()
        ))
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(ck("C_Initialize")(e)),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The code a look-up returns for a key that is not in the token while
/// logged in: neither recoverable nor a device fault; `with_session` turns
/// it into [`HsmError::NotFound`].
const MISSING_KEY: RvError = RvError::KeyTypeInconsistent;

/// How an error from `Pool::open` says the token refused the PIN.
const PIN_REFUSED: &str = "PIN refused";

/// Errors that say the device or token, not the request, is at fault: after
/// a fresh session fails with one of these, the store is down.
fn device_fault(e: &CkError) -> bool {
    recoverable(e)
        || matches!(
            e,
            CkError::Pkcs11(
                RvError::GeneralError
                    | RvError::FunctionFailed
                    | RvError::DeviceMemory
                    | RvError::HostMemory
                    | RvError::TokenNotRecognized
                    | RvError::SlotIdInvalid
                    | RvError::SessionCount,
                _
            )
        )
}

/// Errors after which a fresh, logged-in session may succeed.
fn recoverable(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceError
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

struct Pooled {
    session: Session,
    /// Private-key handles this session signs with, by label.
    keys: HashMap<String, KeyHandle>,
    /// Set when a key was looked for while logged in and is not there: the
    /// call fails with [`HsmError::NotFound`], and the store stays up (one
    /// missing key is not a device fault).
    missing: Option<String>,
}

#[derive(Clone, Copy)]
struct KeyHandle {
    handle: ObjectHandle,
    /// The token object; `handle` itself unless `handle` is a session copy.
    token: ObjectHandle,
    /// When the token object was last seen.
    checked: Instant,
}

impl KeyHandle {
    fn is_copy(&self) -> bool {
        self.handle != self.token
    }
}

/// Why and since when the store is down.
struct Down {
    since: std::time::SystemTime,
    why: String,
}

/// Whether the store is down, and whether a thread is bringing it back:
/// both change under one lock, so a failure that arrives while recovery
/// finishes always either sees the store up or a recovery under way.
#[derive(Default)]
struct State {
    down: Option<Down>,
    recovering: bool,
    /// The token refused the PIN: retrying would lock it. Nothing retries
    /// until the process is restarted with the right PIN.
    gave_up: bool,
}

struct Pool {
    ctx: Pkcs11,
    retry: Duration,
    state: Mutex<State>,
    token_label: String,
    pin: AuthPin,
    copy_keys: bool,
    key_recheck: Duration,
    slots: Vec<Mutex<Option<Pooled>>>,
    next: AtomicUsize,
}

impl Pool {
    fn find_slot(&self) -> Result<Slot> {
        let slots = self
            .ctx
            .get_slots_with_initialized_token()
            .map_err(ck("C_GetSlotList"))?;
        for slot in slots {
            let info = self
                .ctx
                .get_token_info(slot)
                .map_err(ck("C_GetTokenInfo"))?;
            if info.label().trim_end() == self.token_label {
                return Ok(slot);
            }
        }
        Err(HsmError::Config(format!(
            "no initialised PKCS#11 token labelled {:?}",
            self.token_label
        )))
    }

    fn open(&self) -> Result<Pooled> {
        let slot = self.find_slot()?;
        let session = self
            .ctx
            .open_rw_session(slot)
            .map_err(ck("C_OpenSession"))?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(CkError::Pkcs11(
                RvError::PinIncorrect | RvError::PinLocked | RvError::PinExpired,
                _,
            )) => {
                return Err(HsmError::Config(format!(
                    "{PIN_REFUSED} by token {:?}",
                    self.token_label
                )));
            }
            Err(e) => return Err(ck("C_Login")(e)),
        }
        Ok(Pooled {
            session,
            keys: HashMap::new(),
            missing: None,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails fast while the store is down.
    fn check_up(&self) -> Result<()> {
        match &self.state().down {
            None => Ok(()),
            Some(d) => {
                let since = d
                    .since
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Err(HsmError::Unavailable(format!(
                    "token {:?} down since {} (unix time): {}",
                    self.token_label,
                    since.as_secs(),
                    d.why
                )))
            }
        }
    }

    fn is_down(&self) -> bool {
        self.state().down.is_some()
    }

    /// Marks the store down and makes sure a thread is bringing it back.
    fn mark_down(self: &Arc<Self>, why: String) -> HsmError {
        {
            let mut state = self.state();
            if state.down.is_none() {
                tracing::error!(token = %self.token_label, error = %why, "key store down; reconnecting in the background");
                state.down = Some(Down {
                    since: std::time::SystemTime::now(),
                    why: why.clone(),
                });
            }
        }
        self.ensure_recovering();
        HsmError::Unavailable(format!("token {:?}: {why}", self.token_label))
    }

    /// Starts the recovery thread if the store is down and none runs (also
    /// called by every health check, so a thread that could not be started
    /// is started later).
    fn ensure_recovering(self: &Arc<Self>) {
        let mut state = self.state();
        if state.down.is_none() || state.recovering || state.gave_up {
            return;
        }
        let pool = self.clone();
        state.recovering = std::thread::Builder::new()
            .name("pkcs11-recovery".into())
            .spawn(move || pool.recover())
            .is_ok();
    }

    /// Until a fresh session logs in: drop every session of this pool,
    /// re-initialise the module, reopen. Holding every slot's lock keeps
    /// this pool's signers off the module while it is finalised. (The module
    /// context is shared by every store of the process on the same module;
    /// `muhr` opens one key store per process.)
    fn recover(self: Arc<Self>) {
        /// Clears `recovering` however this thread ends, a panic included,
        /// so that the next health check can start another.
        struct Done<'a>(&'a Pool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.state().recovering = false;
            }
        }
        let _done = Done(&self);
        let mut attempts = 0u64;
        loop {
            std::thread::sleep(self.retry);
            attempts += 1;
            let mut guards: Vec<_> = self
                .slots
                .iter()
                .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
                .collect();
            for g in guards.iter_mut() {
                **g = None;
            }
            let _ = self.ctx.clone().finalize();
            let reopened = match self
                .ctx
                .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                    self.open()
                }
                Err(e) => Err(ck("C_Initialize")(e)),
            };
            match reopened {
                Ok(p) => {
                    *guards[0] = Some(p);
                    drop(guards);
                    let mut state = self.state();
                    state.down = None;
                    state.recovering = false;
                    drop(state);
                    tracing::warn!(token = %self.token_label, attempts, "key store back; signing resumed");
                    return;
                }
                Err(HsmError::Config(why)) if why.starts_with(PIN_REFUSED) => {
                    drop(guards);
                    let mut state = self.state();
                    state.recovering = false;
                    state.gave_up = true;
                    drop(state);
                    tracing::error!(token = %self.token_label, "the token refused the PIN: not trying again (the token would lock); restart muhr with the right PIN");
                    return;
                }
                Err(e) => {
                    drop(guards);
                    if attempts == 1 || attempts.is_multiple_of(30) {
                        tracing::warn!(token = %self.token_label, attempts, error = %e, "key store still down");
                    }
                }
            }
        }
    }

    /// Runs `f` on a logged-in session; on a recoverable failure the session is
    /// replaced and `f` runs once more. When that fails too for a reason of the
    /// device's, or no session opens, the store is down.
    fn with_session<T>(
        self: &Arc<Self>,
        op: &'static str,
        f: impl Fn(&mut Pooled) -> std::result::Result<T, CkError>,
    ) -> Result<T> {
        self.check_up()?;
        let n = self.slots.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut guard = (0..n)
            .find_map(|i| self.slots[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| {
                self.slots[start % n]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
            });
        // Down while this call waited for its session.
        self.check_up()?;
        for attempt in 0..2 {
            if guard.is_none() {
                match self.open() {
                    Ok(p) => *guard = Some(p),
                    Err(HsmError::Config(why)) if why.starts_with(PIN_REFUSED) => {
                        drop(guard);
                        // Another try would count against the token's
                        // lockout: nothing retries until a restart.
                        self.state().gave_up = true;
                        tracing::error!(token = %self.token_label, "the token refused the PIN: not trying again (the token would lock); restart muhr with the right PIN");
                        return Err(self.mark_down(why));
                    }
                    Err(e) => {
                        drop(guard);
                        return Err(self.mark_down(e.to_string()));
                    }
                }
            }
            let pooled = guard.as_mut().expect("just opened");
            pooled.missing = None;
            let r = f(pooled);
            // Only a look-up that found no key sets `missing`; the same code
            // from the module itself (a key of the wrong type) is its own.
            if let (Err(CkError::Pkcs11(MISSING_KEY, _)), Some(label)) = (&r, pooled.missing.take())
            {
                return Err(HsmError::NotFound(label));
            }
            match r {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && recoverable(&e) => {
                    tracing::warn!(op, error = %e, "PKCS#11 session lost; reopening and logging in again");
                    // Dropping closes the old handle; an error there is expected.
                    *guard = None;
                }
                Err(e) if device_fault(&e) => {
                    *guard = None;
                    drop(guard);
                    return Err(self.mark_down(ck(op)(e).to_string()));
                }
                Err(e) => return Err(ck(op)(e)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }
}

impl Pool {
    /// The handle a session signs with: its own session copy of the token key when
    /// the module allows one, else the token key itself.
    fn signing_handle(
        &self,
        session: &Session,
        label: &str,
    ) -> std::result::Result<KeyHandle, CkError> {
        let found = Pkcs11Store::find(session, ObjectClass::PRIVATE_KEY, label)?;
        let Some(&token_key) = found.first() else {
            // Private objects are invisible when logged out: then a fresh
            // session logs in and looks again. Logged in, the key is gone.
            let logged_in = matches!(
                session.get_session_info()?.session_state(),
                SessionState::RoUser | SessionState::RwUser
            );
            return Err(CkError::Pkcs11(
                if logged_in {
                    MISSING_KEY
                } else {
                    RvError::UserNotLoggedIn
                },
                cryptoki::context::Function::FindObjects,
            ));
        };
        if self.copy_keys {
            match session.copy_object(token_key, &[Attribute::Token(false)]) {
                Ok(handle) => {
                    return Ok(KeyHandle {
                        handle,
                        token: token_key,
                        checked: Instant::now(),
                    });
                }
                Err(e) if recoverable(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(label, error = %e, "the module keeps no session copy of this key; signing with the token object");
                }
            }
        }
        Ok(KeyHandle {
            handle: token_key,
            token: token_key,
            checked: Instant::now(),
        })
    }
}

/// Keys in a PKCS#11 token, used through a pool of logged-in sessions that
/// recovers by itself when the token goes away (see the module documentation).
pub struct Pkcs11Store {
    pool: Arc<Pool>,
}

impl Pkcs11Store {
    /// Opens the token and logs in once, so a wrong module, token label or PIN
    /// fails at start-up rather than at the first signature.
    pub fn new(config: Pkcs11Config) -> Result<Self> {
        let ctx = context(&config.module)?;
        let sessions = config.sessions.clamp(1, 64);
        let pool = Pool {
            ctx,
            retry: config.retry.max(Duration::from_millis(100)),
            state: Mutex::new(State::default()),
            token_label: config.token_label,
            pin: AuthPin::from(config.pin.as_str()),
            copy_keys: config.copy_keys_to_session,
            key_recheck: config.key_recheck,
            slots: (0..sessions).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        };
        // Fail at start-up, not at the first signature, when the token or PIN is wrong.
        let first = pool.open()?;
        *pool.slots[0].lock().unwrap_or_else(|p| p.into_inner()) = Some(first);
        Ok(Self {
            pool: Arc::new(pool),
        })
    }

    /// The process-wide context, for operational tools and tests that need to act
    /// on the module directly.
    pub fn context(&self) -> &Pkcs11 {
        &self.pool.ctx
    }

    fn find(
        session: &Session,
        class: ObjectClass,
        label: &str,
    ) -> std::result::Result<Vec<ObjectHandle>, CkError> {
        session.find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
    }

    fn read_public_key(&self, label: &str, spec: KeySpec) -> Result<SubjectPublicKeyInfoOwned> {
        let mismatch = || HsmError::Mismatch {
            label: label.to_string(),
            expected: spec.to_string(),
        };
        let attrs = self.pool.with_session("read public key", |p| {
            let found = Self::find(&p.session, ObjectClass::PUBLIC_KEY, label)?;
            let Some(&h) = found.first() else {
                return Ok(None);
            };
            p.session
                .get_attributes(
                    h,
                    &[
                        AttributeType::KeyType,
                        AttributeType::EcParams,
                        AttributeType::EcPoint,
                        AttributeType::Modulus,
                        AttributeType::PublicExponent,
                    ],
                )
                .map(Some)
        })?;
        let attrs = attrs.ok_or_else(|| HsmError::NotFound(label.to_string()))?;
        let (mut key_type, mut params, mut point, mut modulus, mut exponent) =
            (None, None, None, None, None);
        for a in attrs {
            match a {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::EcParams(v) => params = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                Attribute::Modulus(v) => modulus = Some(v),
                Attribute::PublicExponent(v) => exponent = Some(v),
                _ => {}
            }
        }
        let bad = |e: der::Error| HsmError::Crypto(format!("public key of {label:?}: {e}"));
        if let Some(curve) = spec.curve() {
            if key_type != Some(KeyType::EC) {
                return Err(mismatch());
            }
            let params = params.ok_or_else(mismatch)?;
            if const_oid::ObjectIdentifier::from_der(&params).ok() != Some(curve) {
                return Err(mismatch());
            }
            // CKA_EC_POINT is the point wrapped in a DER OCTET STRING.
            let point = point.ok_or_else(mismatch)?;
            let point = OctetString::from_der(&point).map_err(bad)?;
            Ok(SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: const_oid::db::rfc5912::ID_EC_PUBLIC_KEY,
                    parameters: Some(der::asn1::Any::encode_from(&curve).map_err(bad)?),
                },
                subject_public_key: BitString::from_bytes(point.as_bytes()).map_err(bad)?,
            })
        } else {
            if key_type != Some(KeyType::RSA) {
                return Err(mismatch());
            }
            let (modulus, exponent) = (
                modulus.ok_or_else(mismatch)?,
                exponent.ok_or_else(mismatch)?,
            );
            let n = UintRef::new(&modulus).map_err(bad)?;
            if Some(n.as_bytes().len() as u32 * 8) != spec.rsa_bits() {
                return Err(mismatch());
            }
            let rsa = RsaPublicKey {
                modulus: n,
                public_exponent: UintRef::new(&exponent).map_err(bad)?,
            }
            .to_der()
            .map_err(bad)?;
            Ok(SubjectPublicKeyInfoOwned {
                algorithm: AlgorithmIdentifierOwned {
                    oid: const_oid::db::rfc5912::RSA_ENCRYPTION,
                    parameters: Some(der::asn1::Any::null()),
                },
                subject_public_key: BitString::from_bytes(&rsa).map_err(bad)?,
            })
        }
    }

    fn key(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>> {
        let spki = self.read_public_key(label, spec)?;
        Ok(Arc::new(Pkcs11Key {
            pool: self.pool.clone(),
            label: label.to_string(),
            spec,
            spki,
        }))
    }
}

impl KeyStore for Pkcs11Store {
    fn generate(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>> {
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|e| HsmError::Crypto(e.to_string()))?;
        let exists = self.pool.with_session("C_FindObjects", |p| {
            Ok(
                !Self::find(&p.session, ObjectClass::PRIVATE_KEY, label)?.is_empty()
                    || !Self::find(&p.session, ObjectClass::PUBLIC_KEY, label)?.is_empty(),
            )
        })?;
        if exists {
            return Err(HsmError::Exists(label.to_string()));
        }
        let common = |private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Id(id.to_vec()),
            ]
        };
        let mut public = common(false);
        public.push(Attribute::Verify(true));
        public.push(Attribute::Encrypt(false));
        public.push(Attribute::Wrap(false));
        let mut private = common(true);
        private.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]);
        let mechanism = if let Some(curve) = spec.curve() {
            public.push(Attribute::EcParams(
                curve
                    .to_der()
                    .map_err(|e| HsmError::Crypto(e.to_string()))?,
            ));
            Mechanism::EccKeyPairGen
        } else {
            let bits = spec.rsa_bits().expect("RSA spec");
            public.push(Attribute::ModulusBits((bits as u64).into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        };
        self.pool.with_session("C_GenerateKeyPair", |p| {
            p.session.generate_key_pair(&mechanism, &public, &private)
        })?;
        tracing::info!(label, %spec, token = %self.pool.token_label, "key pair generated in the token");
        self.key(label, spec)
    }

    fn open(&self, label: &str, spec: KeySpec) -> Result<Arc<dyn KeySigner>> {
        self.key(label, spec)
    }

    fn is_up(&self) -> bool {
        !self.pool.is_down()
    }

    fn health(&self) -> Result<()> {
        self.pool.ensure_recovering();
        self.pool.check_up()?;
        // Asks the token itself, not only the session in memory: the token's
        // information and a search of its objects (SoftHSM reads its token
        // directory for these; a network HSM goes to the device).
        let ctx = self.pool.ctx.clone();
        let info = self.pool.with_session("C_GetTokenInfo", |p| {
            let info = p.session.get_session_info()?;
            ctx.get_token_info(info.slot_id())?;
            Pkcs11Store::find(&p.session, ObjectClass::PRIVATE_KEY, "muhr health probe")?;
            Ok(info)
        })?;
        let state = info.session_state();
        match state {
            SessionState::RoUser | SessionState::RwUser => Ok(()),
            _ => {
                // Logged out underneath us: a fresh session logs in again.
                self.pool.with_session("C_Login", |p| {
                    match p.session.login(UserType::User, Some(&self.pool.pin)) {
                        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
                        Err(e) => Err(e),
                    }
                })
            }
        }
    }

    fn describe(&self) -> String {
        format!("pkcs11 token {}", self.pool.token_label)
    }
}

struct Pkcs11Key {
    pool: Arc<Pool>,
    label: String,
    spec: KeySpec,
    spki: SubjectPublicKeyInfoOwned,
}

impl KeySigner for Pkcs11Key {
    fn label(&self) -> &str {
        &self.label
    }
    fn spec(&self) -> KeySpec {
        self.spec
    }
    fn public_key(&self) -> &SubjectPublicKeyInfoOwned {
        &self.spki
    }
    /// One signature per pooled session at a time.
    fn parallelism(&self) -> usize {
        self.pool.slots.len()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let (mechanism, input): (Mechanism, Vec<u8>) = match self.spec {
            KeySpec::EcdsaP256 => (Mechanism::Ecdsa, sha2::Sha256::digest(message).to_vec()),
            KeySpec::EcdsaP384 => (Mechanism::Ecdsa, sha2::Sha384::digest(message).to_vec()),
            KeySpec::Rsa { .. } => (Mechanism::Sha256RsaPkcs, message.to_vec()),
            KeySpec::RsaPss { .. } => (
                Mechanism::Sha256RsaPkcsPss(PkcsPssParams {
                    hash_alg: MechanismType::SHA256,
                    mgf: PkcsMgfType::MGF1_SHA256,
                    s_len: 32u64.into(),
                }),
                message.to_vec(),
            ),
        };
        let label = self.label.as_str();
        let raw = self.pool.with_session("C_Sign", |p| {
            let forget = |p: &mut Pooled, key: KeyHandle| {
                // Looked up again next time; a copy is not left behind.
                p.keys.remove(label);
                if key.is_copy() {
                    let _ = p.session.destroy_object(key.handle);
                }
            };
            let key = match p.keys.get(label).copied() {
                Some(k) if k.is_copy() && k.checked.elapsed() >= self.pool.key_recheck => {
                    match p.session.get_attributes(k.token, &[AttributeType::Class]) {
                        Ok(_) => {
                            let k = KeyHandle {
                                checked: Instant::now(),
                                ..k
                            };
                            p.keys.insert(label.to_string(), k);
                            k
                        }
                        Err(e) => {
                            forget(p, k);
                            return Err(e);
                        }
                    }
                }
                Some(k) => k,
                None => {
                    let k = self
                        .pool
                        .signing_handle(&p.session, label)
                        .inspect_err(|_| p.missing = Some(label.to_string()))?;
                    p.keys.insert(label.to_string(), k);
                    k
                }
            };
            p.session
                .sign(&mechanism, key.handle, &input)
                .inspect_err(|_| forget(p, key))
        })?;
        match self.spec.ec_scalar_len() {
            Some(n) => ecdsa_raw_to_der(&raw, n),
            None => Ok(raw),
        }
    }
}
