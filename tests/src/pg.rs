//! PostgreSQL for tests: one server per machine (the control plane's own embedded
//! launcher, under `target/test-pg`, adopted if already running), and a fresh
//! database per test. `FERRY_TEST_DATABASE_URL` points the tests at another server.
//! `make test` stops the server when the suite ends.

use std::path::PathBuf;

use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use tokio::sync::OnceCell;

/// The server's URL, whose database part each test replaces.
static SERVER: OnceCell<String> = OnceCell::const_new();

/// `url` with its database name replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = url[after_scheme..].find('/').map(|i| i + after_scheme);
    let query_start = url.find('?');
    match (path_start, query_start) {
        (Some(p), Some(q)) if p < q => format!("{}/{db}{}", &url[..p], &url[q..]),
        (Some(p), None) => format!("{}/{db}", &url[..p]),
        (_, Some(q)) => format!("{}/{db}{}", &url[..q], &url[q..]),
        (None, None) => format!("{url}/{db}"),
    }
}

/// Where the shared test server lives.
pub fn server_dir() -> PathBuf {
    crate::workspace().join("target/test-pg")
}

async fn server() -> String {
    SERVER
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("FERRY_TEST_DATABASE_URL") {
                return url;
            }
            let dir = server_dir();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).expect("create target/test-pg");
                // Several test binaries may start at once: one starts the server.
                let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
                let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                    .map_err(|(_, e)| e)
                    .expect("lock target/test-pg");
                let pg = ferry_control_plane::embedded_pg::EmbeddedPg::start(&dir, None)
                    .expect("start the test PostgreSQL server");
                format!(
                    "postgres://postgres@localhost:5432/postgres?host={}",
                    pg.socket_dir().display()
                )
            })
            .await
            .expect("start PostgreSQL")
        })
        .await
        .clone()
}

/// A new, empty database for one test; dropped with the guard.
pub struct TestDb {
    pub name: String,
    url: String,
    admin: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Self {
        let server = server().await;
        let admin: PgConnectOptions = with_database(&server, "postgres")
            .parse()
            .expect("server URL");
        let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect_with(&admin)
            .await
            .expect("connect to test server");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        Self {
            url: with_database(&server, &name),
            name,
            admin,
        }
    }

    /// A URL for `--database-url` (Unix socket or TCP, as the server is reached).
    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("pool")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Drop may run inside a runtime: do the work on a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect_with(&admin).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn database_replaced() {
        use super::with_database;
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?host=/x", "t1"),
            "postgres://u@h:5432/t1?host=/x"
        );
        assert_eq!(
            with_database("postgres://u@h/db", "t1"),
            "postgres://u@h/t1"
        );
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
    }
}
