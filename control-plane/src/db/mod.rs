//! The datastore layer: one module per resource, methods named noun-first
//! (`host_fetch`, `vm_insert`, ...). Handlers never hold SQL; they call these.
//! Rows become API views (`ferry_api`) here, at the edge of the database.

pub mod audit;
pub mod ca;
pub mod clusters;
pub mod datastores;
pub mod drs;
pub mod events;
pub mod hosts;
pub mod maintenance;
pub mod migrations;
pub mod networks;
pub mod rules;
pub mod sagas;
pub mod schedules;
pub mod tasks;
pub mod tokens;
pub mod vm_operations;
pub mod vms;

use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Schema migrations, embedded from `migrations/` at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// The control plane's handle on PostgreSQL.
#[derive(Clone, Debug)]
pub struct Db {
    pub pool: PgPool,
}

impl Db {
    /// Connects, then applies every pending migration.
    pub async fn connect(opts: PgConnectOptions, pool_size: u32) -> anyhow::Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await
            .context("connect to PostgreSQL")?;
        MIGRATOR
            .run(&pool)
            .await
            .context("apply schema migrations")?;
        Ok(Self { pool })
    }
}

/// `?limit=` after validation, and the position to continue after.
#[derive(Debug, Clone, Copy)]
pub struct PageReq<C> {
    pub limit: u32,
    pub after: Option<C>,
}

/// Splits `limit + 1` fetched rows into a page and the cursor of its last item.
pub fn paginate<R, T>(
    mut rows: Vec<R>,
    limit: u32,
    cursor_of: impl Fn(&R) -> String,
    view: impl Fn(R) -> T,
) -> ferry_api::Page<T> {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(&cursor_of)
    } else {
        None
    };
    ferry_api::Page {
        items: rows.into_iter().map(view).collect(),
        next_cursor,
    }
}

/// Clamps a database integer into the unsigned range the API shows.
pub fn unsigned(v: i64) -> u64 {
    v.max(0) as u64
}

/// A page of `from` (`"<table> <alias>"`) by id, optionally only the row named
/// `name`, with `columns` computed for the page's rows.
pub async fn list_by_id_and_name<T, R>(
    db: &Db,
    from: &str,
    columns: &str,
    page: PageReq<uuid::Uuid>,
    name: Option<&str>,
    view: impl Fn(R) -> T,
    id_of: impl Fn(&R) -> uuid::Uuid,
) -> sqlx::Result<ferry_api::Page<T>>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    let alias = from.split_whitespace().last().unwrap_or(from);
    let rows: Vec<R> = PagedQuery::new(from)
        .filter(&format!("{alias}.id > "), page.after)
        .filter(&format!("{alias}.name = "), name.map(str::to_string))
        .finish(&format!("{alias}.id"), page.limit, columns, alias)
        .build_query_as()
        .fetch_all(&db.pool)
        .await?;
    Ok(paginate(rows, page.limit, |r| id_of(r).to_string(), view))
}

/// A list query that picks the page first and computes per-row columns (subqueries,
/// aggregates) for that page only:
///
/// `WITH page AS (SELECT * FROM <from> WHERE <filters> ORDER BY <key> LIMIT n+1)
///  SELECT <columns> FROM page <alias> ORDER BY <key>`
///
/// Filters are added only when given, so each combination is its own prepared
/// statement with a plan that can use its index (a cached generic plan of
/// `($1 IS NULL OR col = $1)` cannot), and the limit is a literal (validated by the
/// caller) so the planner always knows how few rows are wanted.
pub struct PagedQuery<'a> {
    qb: sqlx::QueryBuilder<'a, sqlx::Postgres>,
}

impl<'a> PagedQuery<'a> {
    pub fn new(from: &str) -> Self {
        Self {
            qb: sqlx::QueryBuilder::new(format!("WITH page AS (SELECT * FROM {from} WHERE true")),
        }
    }

    /// Adds ` AND <sql><value>` when `value` is given, e.g. `filter("h.name = ", name)`.
    pub fn filter<T>(mut self, sql: &str, value: Option<T>) -> Self
    where
        T: 'a + sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        if let Some(v) = value {
            self.qb.push(" AND ").push(sql).push_bind(v);
        }
        self
    }

    /// Adds ` AND <sql>(<a>, <b>)`, e.g. a row comparison for a keyset page:
    /// `filter_pair("(v.memory_mib, v.id) > ", m, id)`.
    pub fn filter_pair<A, B>(mut self, sql: &str, a: A, b: B) -> Self
    where
        A: 'a + sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
        B: 'a + sqlx::Encode<'a, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Send,
    {
        self.qb
            .push(" AND ")
            .push(sql)
            .push("(")
            .push_bind(a)
            .push(", ")
            .push_bind(b)
            .push(")");
        self
    }

    pub fn finish(
        self,
        order_by: &str,
        limit: u32,
        columns: &str,
        alias: &str,
    ) -> sqlx::QueryBuilder<'a, sqlx::Postgres> {
        self.finish_with(
            order_by,
            limit,
            &format!(" {columns} FROM page {alias} ORDER BY {order_by}"),
        )
    }

    /// Closes the page CTE and appends `rest` verbatim (more CTEs over `page`, then
    /// the final SELECT), for views that aggregate other tables per row.
    pub fn finish_with(
        mut self,
        order_by: &str,
        limit: u32,
        rest: &str,
    ) -> sqlx::QueryBuilder<'a, sqlx::Postgres> {
        self.qb.push(format!(
            " ORDER BY {order_by} LIMIT {}){rest}",
            u64::from(limit) + 1
        ));
        self.qb
    }
}
