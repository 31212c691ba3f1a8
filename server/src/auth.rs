//! Who is asking, and may they.
//!
//! People sign in with a name and password (argon2id hashes at rest) and get a server-side session
//! in an HttpOnly, SameSite=Strict cookie (Secure behind TLS). Scripts send
//! `Authorization: Bearer <token>`; tokens are random 256-bit secrets stored as SHA-256 hashes and
//! can be revoked or made to expire. Requests that change state with a session cookie must come
//! from the portal's own pages (same-origin check), so other sites cannot ride on a signed-in
//! browser. Sign-in attempts are counted before their password is checked, per client address and
//! name ([`crate::sign_in_limit`]), and only a fixed number of password hashes run at once.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::{FromRef, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::config::LoginSettings;
use crate::sign_in_limit::SignInLimiter;
use crate::store::{Store, StoreError, UserRecord, now_ms};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "passage_session";
/// How long a browser session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Shortest password accepted.
pub const MIN_PASSWORD_LEN: usize = 10;
/// The longest an expiring API token may last, in days.
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// A signed-in user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// Admins approve, manage hosts and read the audit log.
    pub is_admin: bool,
}

impl From<UserRecord> for User {
    fn from(record: UserRecord) -> Self {
        User {
            id: record.id,
            name: record.name,
            is_admin: record.is_admin,
        }
    }
}

/// Why a sign-in or an account change failed.
#[derive(Debug, Error)]
pub enum AuthError {
    /// Name or password wrong (which one is not said).
    #[error("wrong name or password")]
    WrongCredentials,
    /// Too many failures recently.
    #[error("too many failed sign-ins; try again in {0} s")]
    RateLimited(u64),
    /// A user name that cannot be used.
    #[error("user names are 1 to 64 letters, digits, '.', '-' or '_'")]
    BadName,
    /// A password that is too short.
    #[error("passwords need at least {MIN_PASSWORD_LEN} characters")]
    WeakPassword,
    /// The name is taken.
    #[error("the name {0:?} is already taken")]
    Taken(String),
    /// The password was right, but an admin has disabled the account.
    #[error("this account is disabled; an admin can enable it again")]
    Disabled,
    /// No such account (or token).
    #[error("{0}")]
    NotFound(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The account's state does not allow it.
    #[error("{0}")]
    Conflict(String),
    /// A value that cannot be used.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Hashing failed (it should not).
    #[error("password hashing failed: {0}")]
    Hash(String),
}

impl AuthError {
    /// The HTTP status that answers it.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::WrongCredentials => StatusCode::UNAUTHORIZED,
            AuthError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            AuthError::BadName | AuthError::WeakPassword | AuthError::Invalid(_) => {
                StatusCode::BAD_REQUEST
            }
            AuthError::Taken(_) | AuthError::Conflict(_) => StatusCode::CONFLICT,
            AuthError::Disabled | AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
            AuthError::NotFound(_) => StatusCode::NOT_FOUND,
            AuthError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Hash(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            // The database's own words go to the log, not to whoever asked.
            AuthError::Store(e) => {
                tracing::error!(error = %e, "an account query failed");
                crate::api::DATABASE_UNAVAILABLE.to_string()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if let AuthError::RateLimited(seconds) = self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Hashes a password with argon2id and a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Checks a password against a stored hash.
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A new random secret: `prefix` and 32 random bytes in hex.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// What is stored of a secret.
pub fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Checks a user name.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Accounts and sign-in.
#[derive(Debug, Clone)]
pub struct Auth {
    store: Store,
    limiter: SignInLimiter,
    hashing: Arc<Semaphore>,
    stats: Arc<HashingStats>,
}

/// What password hashing has done, for tests and operators.
#[derive(Debug, Default)]
struct HashingStats {
    checks: AtomicU64,
    running: AtomicUsize,
    peak: AtomicUsize,
}

/// Counts a hash as running while it lives.
struct Running<'a>(&'a HashingStats);

impl<'a> Running<'a> {
    fn start(stats: &'a HashingStats) -> Running<'a> {
        let now = stats.running.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Running(stats)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Auth {
    /// Accounts kept in `store`, with the default sign-in limits.
    pub fn new(store: Store) -> Auth {
        Auth::with_settings(store, LoginSettings::default())
    }

    /// Accounts kept in `store`, with these sign-in limits.
    pub fn with_settings(store: Store, settings: LoginSettings) -> Auth {
        Auth {
            store,
            limiter: SignInLimiter::new(settings),
            hashing: Arc::new(Semaphore::new(settings.concurrent_hashes)),
            stats: Arc::default(),
        }
    }

    /// Runs argon2 work off the async runtime, at most `login.concurrent_hashes` at once; the
    /// others wait their turn.
    async fn hash_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))?;
        let _running = Running::start(&self.stats);
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| AuthError::Hash(e.to_string()))
    }

    /// Checks `password` against `hash` (counted in [`Auth::password_checks`]).
    pub(crate) async fn check_password(&self, hash: String, password: &str) -> bool {
        self.stats.checks.fetch_add(1, Ordering::SeqCst);
        let password = password.to_string();
        self.hash_work(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false)
    }

    /// Hashes a new password after checking its length.
    pub(crate) async fn new_password_hash(&self, password: &str) -> Result<String, AuthError> {
        if password.chars().count() < MIN_PASSWORD_LEN {
            return Err(AuthError::WeakPassword);
        }
        let password = password.to_string();
        self.hash_work(move || hash_password(&password)).await?
    }

    /// How many passwords have been checked since start.
    pub fn password_checks(&self) -> u64 {
        self.stats.checks.load(Ordering::SeqCst)
    }

    /// The most password hashes that have run at once.
    pub fn peak_concurrent_hashes(&self) -> usize {
        self.stats.peak.load(Ordering::SeqCst)
    }

    /// Counts an attempt to prove `name`'s password from `client`, before it is checked.
    pub(crate) fn begin_attempt(
        &self,
        client: IpAddr,
        name: &str,
    ) -> Result<crate::sign_in_limit::Attempt, AuthError> {
        // Names that cannot exist share one key, so that their length costs nothing.
        let key = if valid_user_name(name) { name } else { "" };
        self.limiter
            .begin(client, key)
            .map_err(|wait| AuthError::RateLimited(wait.as_secs().max(1)))
    }

    /// Creates a user after checking the name and password.
    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        is_admin: bool,
    ) -> Result<User, AuthError> {
        if !valid_user_name(name) {
            return Err(AuthError::BadName);
        }
        let hash = self.new_password_hash(password).await?;
        match self.store.create_user(name, &hash, is_admin).await {
            Ok(user) => Ok(user.into()),
            Err(e) if crate::store::is_unique_violation(&e) => Err(AuthError::Taken(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks a name and password and opens a session; returns the user and the session secret.
    /// The attempt counts against `client` and the name before the password is checked.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        client: IpAddr,
    ) -> Result<(User, String), AuthError> {
        let attempt = self.begin_attempt(client, name)?;
        if !valid_user_name(name) {
            return Err(AuthError::WrongCredentials);
        }
        let user = self.store.user_by_name(name).await?;
        // Verify against a real hash even for unknown names, so timing does not tell them apart.
        let known = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| DUMMY_HASH.clone());
        let ok = self.check_password(known, password).await;
        match user {
            Some(user) if ok => {
                attempt.succeeded();
                if user.disabled {
                    return Err(AuthError::Disabled);
                }
                let secret = new_secret("");
                let expires = now_ms() + SESSION_LIFETIME.as_millis() as i64;
                self.store
                    .create_session(&secret_hash(&secret), user.id, expires)
                    .await?;
                Ok((user.into(), secret))
            }
            _ => Err(AuthError::WrongCredentials),
        }
    }

    /// The user behind a request's bearer token or session cookie, if any.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<User>, StoreError> {
        if let Some(token) = bearer(headers) {
            return Ok(self
                .store
                .token_user(&secret_hash(token))
                .await?
                .map(User::from));
        }
        match session_secret(headers) {
            Some(secret) => Ok(self
                .store
                .session_user(&secret_hash(&secret))
                .await?
                .map(User::from)),
            None => Ok(None),
        }
    }

    /// Ends the session of a request, if it has one.
    pub async fn logout(&self, headers: &HeaderMap) -> Result<(), StoreError> {
        if let Some(secret) = session_secret(headers) {
            self.store.delete_session(&secret_hash(&secret)).await?;
        }
        Ok(())
    }

    /// Makes a new API token for a user, working for `expires_in_days` if given (1 to
    /// [`MAX_TOKEN_DAYS`]); returns its record and the secret (shown once).
    pub async fn create_token(
        &self,
        user: &User,
        name: &str,
        expires_in_days: Option<u32>,
    ) -> Result<(crate::store::ApiTokenRecord, String), AuthError> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(AuthError::BadName);
        }
        let expires_at = match expires_in_days {
            None => None,
            Some(days @ 1..=MAX_TOKEN_DAYS) => Some(now_ms() + i64::from(days) * 86_400_000),
            Some(days) => {
                return Err(AuthError::Invalid(format!(
                    "a token lasts 1 to {MAX_TOKEN_DAYS} days, not {days}"
                )));
            }
        };
        let secret = new_secret("psg_");
        match self
            .store
            .create_token(user.id, name.trim(), &secret_hash(&secret), expires_at)
            .await
        {
            Ok(record) => Ok((record, secret)),
            Err(e) if crate::store::is_unique_violation(&e) => Err(AuthError::Taken(name.into())),
            Err(e) => Err(e.into()),
        }
    }

    /// The database behind the accounts.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// A valid argon2id hash of a random password, for constant-time refusals of unknown names.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password(&new_secret("")).unwrap_or_default());

/// The bearer token of a request, if it sends one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub(crate) fn session_secret(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value for a new session; `secure` behind TLS.
pub fn session_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn cleared_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// True when the request reached the portal over TLS (directly or through a proxy that says so).
pub fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Refuses state-changing requests that carry the session cookie but come from another site.
/// Bearer-token requests are not ambient credentials and pass.
pub async fn same_origin_guard(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let headers = request.headers();
    if safe
        || bearer(headers).is_some()
        || !same_origin_required(headers)
        || is_same_origin(headers)
    {
        return next.run(request).await;
    }
    (
        StatusCode::FORBIDDEN,
        Json(json!({ "error": "cross-site request refused: state changes must come from the portal's own pages" })),
    )
        .into_response()
}

/// Same-origin checks apply to requests with the session cookie, and to sign-in itself.
fn same_origin_required(headers: &HeaderMap) -> bool {
    session_secret(headers).is_some() || headers.contains_key(header::ORIGIN)
}

fn is_same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let Some(origin) = headers.get(header::ORIGIN) else {
        // Without an Origin header, non-browser clients: they hold no ambient cookie.
        return session_secret(headers).is_none();
    };
    // `Origin: null` (a sandboxed frame, a redirect, a file) is an origin nobody can vouch for,
    // not the absence of one.
    let origin = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://").map(|(_, rest)| rest));
    matches!((host, origin), (Some(host), Some(origin)) if host == origin)
}

/// Extracts the signed-in user, or answers 401.
#[derive(Debug, Clone)]
pub struct CurrentUser(pub User);

/// Extracts a signed-in admin, or answers 401/403.
#[derive(Debug, Clone)]
pub struct Admin(pub User);

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(json!({ "error": "sign in first (session cookie or Authorization: Bearer token)" })),
    )
        .into_response()
}

impl<S> FromRequestParts<S> for CurrentUser
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Auth::from_ref(state);
        match auth.authenticate(&parts.headers).await {
            Ok(Some(user)) => Ok(CurrentUser(user)),
            Ok(None) => Err(unauthorized()),
            Err(e) => {
                tracing::error!(error = %e, "authenticating a request failed on the database");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    Json(json!({ "error": crate::api::DATABASE_UNAVAILABLE })),
                )
                    .into_response())
            }
        }
    }
}

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    Auth: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let CurrentUser(user) = CurrentUser::from_request_parts(parts, state).await?;
        if !user.is_admin {
            return Err((
                StatusCode::FORBIDDEN,
                Json(json!({ "error": "only admins may do this" })),
            )
                .into_response());
        }
        Ok(Admin(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse battery!"));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn secrets_are_random_and_stored_hashed() {
        let (a, b) = (new_secret("psg_"), new_secret("psg_"));
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 64);
        assert_eq!(secret_hash(&a).len(), 64);
        assert_ne!(secret_hash(&a), a);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_behind_tls() {
        let cookie = session_cookie("abc", true);
        assert!(
            cookie.contains("HttpOnly")
                && cookie.contains("SameSite=Strict")
                && cookie.ends_with("Secure")
        );
        assert!(!session_cookie("abc", false).contains("Secure"));
    }

    #[test]
    fn credentials_are_read_from_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; passage_session=s3cr3t; b=2".parse().unwrap(),
        );
        assert_eq!(session_secret(&headers).as_deref(), Some("s3cr3t"));
        headers.insert(header::AUTHORIZATION, "Bearer psg_x".parse().unwrap());
        assert_eq!(bearer(&headers), Some("psg_x"));
    }

    #[test]
    fn cross_site_requests_with_the_cookie_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "portal:8080".parse().unwrap());
        headers.insert(header::COOKIE, "passage_session=x".parse().unwrap());
        headers.insert(header::ORIGIN, "http://evil.example".parse().unwrap());
        assert!(!is_same_origin(&headers));
        headers.insert(header::ORIGIN, "http://portal:8080".parse().unwrap());
        assert!(is_same_origin(&headers));
        headers.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(!is_same_origin(&headers));
    }

    #[test]
    fn an_opaque_origin_is_not_a_missing_one() {
        // A sign-in posted from a sandboxed frame carries no cookie and `Origin: null`.
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "portal:8080".parse().unwrap());
        headers.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(same_origin_required(&headers));
        assert!(!is_same_origin(&headers));
        // A script or curl without Origin and without the cookie passes, as before.
        headers.remove(header::ORIGIN);
        assert!(is_same_origin(&headers));
    }

    #[test]
    fn user_names_are_plain() {
        assert!(valid_user_name("ada.lovelace-1"));
        for bad in ["", "a b", "ünï", "x/y", &"a".repeat(65)] {
            assert!(!valid_user_name(bad), "{bad}");
        }
    }
}
