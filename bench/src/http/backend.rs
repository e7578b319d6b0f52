//! What a variant of the session service stores its sessions in: the [`Backend`] trait, the
//! [`Token`] and [`Session`] it keeps, and the clock ([`now_nanos`]) their expiry is read on.

use std::time::{SystemTime, UNIX_EPOCH};

/// A session token: 128 random bits, 32 hex digits in the API.
pub type Token = u128;

/// One session, as the example keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    /// Who logged in.
    pub user_id: u64,
    /// When it expires, in nanoseconds since the Unix epoch.
    pub expires_at_nanos: u64,
}

/// Where a variant keeps its sessions. Errors are the backend's, as text for the `503`.
pub trait Backend: Clone + Send + Sync + 'static {
    /// Stores a new session; returns `Ok` once it is as durable as the backend makes it.
    fn create(&self, token: Token, session: Session) -> impl Future<Output = Result<(), String>> + Send;
    /// The session of `token`, if it exists and has not expired by `now_nanos`.
    fn read(&self, token: Token, now_nanos: u64) -> impl Future<Output = Result<Option<Session>, String>> + Send;
    /// Ends the session of `token`; whether it existed and had not expired by `now_nanos`.
    fn delete(&self, token: Token, now_nanos: u64) -> impl Future<Output = Result<bool, String>> + Send;
    /// Removes the sessions expired by `now_nanos`.
    fn sweep(&self, now_nanos: u64) -> impl Future<Output = Result<(), String>> + Send;
    /// How many sessions it holds.
    fn count(&self) -> impl Future<Output = Result<u64, String>> + Send;
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> u64 {
    let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
}
