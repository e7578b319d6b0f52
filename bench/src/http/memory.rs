//! The variant without storage: sessions in a `Mutex<HashMap>`, lost on exit. Its routes do
//! what the others' do minus storing, so its figures are the ceiling of the HTTP server and
//! the load generator on this machine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::backend::{Backend, Session, Token};

/// Sessions in memory only.
#[derive(Clone, Default)]
pub struct Memory {
    sessions: Arc<Mutex<HashMap<Token, Session>>>,
}

impl Memory {
    fn lock(&self) -> MutexGuard<'_, HashMap<Token, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Backend for Memory {
    async fn create(&self, token: Token, session: Session) -> Result<(), String> {
        self.lock().insert(token, session);
        Ok(())
    }

    async fn read(&self, token: Token, now_nanos: u64) -> Result<Option<Session>, String> {
        Ok(self.lock().get(&token).filter(|session| session.expires_at_nanos > now_nanos).copied())
    }

    async fn delete(&self, token: Token, now_nanos: u64) -> Result<bool, String> {
        Ok(self.lock().remove(&token).is_some_and(|session| session.expires_at_nanos > now_nanos))
    }

    async fn sweep(&self, now_nanos: u64) -> Result<(), String> {
        self.lock().retain(|_, session| session.expires_at_nanos > now_nanos);
        Ok(())
    }

    async fn count(&self) -> Result<u64, String> {
        Ok(self.lock().len() as u64)
    }
}
