//! API tokens: only the SHA-256 of each secret is stored.

use chrono::{DateTime, Utc};
use ferry_api::token::{Role, Token};
use ferry_api::TokenId;
use uuid::Uuid;

use super::{paginate, Db, PageReq};

#[derive(Debug, sqlx::FromRow)]
pub struct TokenRow {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for Token {
    fn from(r: TokenRow) -> Self {
        Token {
            id: TokenId(r.id),
            name: r.name,
            role: Role::parse(&r.role).unwrap_or(Role::Viewer),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

impl Db {
    pub async fn token_insert(
        &self,
        name: &str,
        role: Role,
        secret_sha256: &str,
    ) -> sqlx::Result<Token> {
        let row: TokenRow = sqlx::query_as(
            "INSERT INTO api_tokens (id, name, role, secret_sha256) VALUES ($1, $2, $3, $4) \
             RETURNING id, name, role, created_at, last_used_at",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(role.as_str())
        .bind(secret_sha256)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.into())
    }

    /// Stores a token for `secret_sha256` unless one exists (the bootstrap admin token).
    pub async fn token_ensure(
        &self,
        name: &str,
        role: Role,
        secret_sha256: &str,
    ) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, secret_sha256) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (secret_sha256) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(role.as_str())
        .bind(secret_sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The token whose secret hashes to `secret_sha256`, marking it used (at most
    /// once a minute, so reads do not turn into writes).
    pub async fn token_authenticate(
        &self,
        secret_sha256: &str,
    ) -> sqlx::Result<Option<(TokenId, Role)>> {
        let row: Option<(Uuid, String, Option<DateTime<Utc>>)> = sqlx::query_as(
            "SELECT id, role, last_used_at FROM api_tokens WHERE secret_sha256 = $1",
        )
        .bind(secret_sha256)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id, role, last_used)) = row else {
            return Ok(None);
        };
        if last_used.is_none_or(|t| Utc::now() - t > chrono::Duration::seconds(60)) {
            sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(Role::parse(&role).map(|r| (TokenId(id), r)))
    }

    pub async fn token_list(&self, page: PageReq<Uuid>) -> sqlx::Result<ferry_api::Page<Token>> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at, last_used_at FROM api_tokens \
             WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        )
        .bind(page.after)
        .bind(i64::from(page.limit) + 1)
        .fetch_all(&self.pool)
        .await?;
        Ok(paginate(
            rows,
            page.limit,
            |r| r.id.to_string(),
            Token::from,
        ))
    }

    pub async fn token_fetch(&self, id: TokenId) -> sqlx::Result<Option<Token>> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at, last_used_at FROM api_tokens WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(Token::from))
    }

    pub async fn token_delete(&self, id: TokenId) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM api_tokens WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}
