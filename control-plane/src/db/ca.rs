//! The certificate authority's row: the one CA certificate and key of this cluster.

use super::Db;

impl Db {
    pub async fn ca_fetch(&self) -> sqlx::Result<Option<(String, String)>> {
        sqlx::query_as("SELECT cert_pem, key_pem FROM certificate_authority WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
    }

    /// Stores a CA unless another control plane stored one first; returns the winner.
    pub async fn ca_insert_or_fetch(
        &self,
        cert_pem: &str,
        key_pem: &str,
    ) -> sqlx::Result<(String, String)> {
        sqlx::query(
            "INSERT INTO certificate_authority (id, cert_pem, key_pem) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(cert_pem)
        .bind(key_pem)
        .execute(&self.pool)
        .await?;
        sqlx::query_as("SELECT cert_pem, key_pem FROM certificate_authority WHERE id = 1")
            .fetch_one(&self.pool)
            .await
    }
}
