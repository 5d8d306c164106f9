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

#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (TokenId, Role, Instant)>>,
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

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl App {
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
