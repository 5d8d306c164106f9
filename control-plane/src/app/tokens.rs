//! Token authentication with a short-lived cache: a read-heavy API should not pay a
//! database round trip per request to learn what it learnt a second ago. Deleting a
//! token clears the cache, so a deleted token stops working at once on this control
//! plane; entries live `TTL` at most, which bounds staleness across replicas.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_api::token::Role;
use ferry_api::TokenId;

use super::App;
use crate::error::ApiResult;
use crate::secrets::sha256_hex;

const TTL: Duration = Duration::from_secs(5);
const MAX_ENTRIES: usize = 10_000;

/// How long an event-stream ticket opens the stream.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (TokenId, Role, Instant)>>,
    /// Event-stream tickets (their SHA-256) → who asked, and when.
    tickets: Mutex<HashMap<String, (TokenId, Role, Instant)>>,
}

impl TokenCache {
    fn get(&self, hash: &str) -> Option<(TokenId, Role)> {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.get(hash)
            .filter(|(_, _, at)| at.elapsed() < TTL)
            .map(|(id, role, _)| (*id, *role))
    }

    fn put(&self, hash: String, id: TokenId, role: Role) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(hash, (id, role, Instant::now()));
    }

    /// Forgets every cached token and every unused stream ticket (a token was
    /// deleted: neither may outlive it).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl App {
    /// A single-use ticket for the event stream, on behalf of `token`.
    pub fn stream_ticket(&self, token: TokenId, role: Role) -> String {
        let ticket = crate::secrets::new_secret("fyst");
        let mut map = self
            .tokens
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, _, at)| at.elapsed() < TICKET_TTL);
        if map.len() < MAX_ENTRIES {
            map.insert(sha256_hex(&ticket), (token, role, Instant::now()));
        }
        ticket
    }

    /// Whose ticket this is, if it is valid; it is used up.
    pub fn stream_ticket_redeem(&self, ticket: &str) -> Option<(TokenId, Role)> {
        let mut map = self
            .tokens
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        map.remove(&sha256_hex(ticket))
            .filter(|(_, _, at)| at.elapsed() < TICKET_TTL)
            .map(|(id, role, _)| (id, role))
    }

    /// The token a bearer secret belongs to, if any.
    pub async fn token_authenticate(&self, secret: &str) -> ApiResult<Option<(TokenId, Role)>> {
        let hash = sha256_hex(secret);
        if let Some(hit) = self.tokens.get(&hash) {
            return Ok(Some(hit));
        }
        let found = self.db.token_authenticate(&hash).await?;
        if let Some((id, role)) = found {
            self.tokens.put(hash, id, role);
        }
        Ok(found)
    }
}
