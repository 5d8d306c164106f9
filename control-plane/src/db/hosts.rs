//! Hosts: identity (joined by name), facts reported by the agent (stored only when
//! the report's generation is newer), heartbeats and reachability.

use chrono::{DateTime, Utc};
use ferry_api::host::{Accel, Host, HostCpu, HostLoad, HostMemory, HostState};
use ferry_api::{ClusterId, DatastoreId, HostId, NetworkId};
use ferry_proto::v1::HostReport;
use uuid::Uuid;

use super::{paginate, unsigned, Db, PageReq, PagedQuery};

#[derive(Debug, sqlx::FromRow)]
pub struct HostRow {
    pub id: Uuid,
    pub name: String,
    pub cluster_id: Uuid,
    pub address: String,
    pub mode: String,
    pub reachable: bool,
    pub accel: String,
    pub accel_reason: String,
    pub cpu_vendor: String,
    pub cpu_model: String,
    pub cpu_cores: i32,
    pub cpu_flags: Vec<String>,
    pub cpu_supported_models: Vec<String>,
    pub memory_total_mib: i64,
    pub memory_free_mib: i64,
    pub load_cpu_pct: f32,
    pub load_mem_pct: f32,
    pub agent_version: String,
    pub hypervisor_version: String,
    pub last_seen_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub datastore_ids: Vec<Uuid>,
    pub network_ids: Vec<Uuid>,
    pub vm_count: i64,
}

impl From<HostRow> for Host {
    fn from(r: HostRow) -> Self {
        let state = if !r.reachable {
            HostState::Disconnected
        } else {
            match r.mode.as_str() {
                "entering_maintenance" => HostState::EnteringMaintenance,
                "maintenance" => HostState::Maintenance,
                _ => HostState::Connected,
            }
        };
        Host {
            id: HostId(r.id),
            name: r.name,
            cluster_id: ClusterId(r.cluster_id),
            address: r.address,
            state,
            accel: Accel::parse(&r.accel).unwrap_or(Accel::Tcg),
            accel_reason: r.accel_reason,
            cpu: HostCpu {
                vendor: r.cpu_vendor,
                model: r.cpu_model,
                cores: r.cpu_cores.max(0) as u32,
                flags: r.cpu_flags,
                supported_models: r.cpu_supported_models,
            },
            memory: HostMemory {
                total_mib: unsigned(r.memory_total_mib),
                free_mib: unsigned(r.memory_free_mib),
            },
            datastores: r.datastore_ids.into_iter().map(DatastoreId).collect(),
            networks: r.network_ids.into_iter().map(NetworkId).collect(),
            vm_count: r.vm_count.max(0) as u32,
            load: HostLoad {
                cpu_pct: r.load_cpu_pct,
                mem_pct: r.load_mem_pct,
            },
            agent_version: r.agent_version,
            hypervisor_version: r.hypervisor_version,
            last_seen_at: r.last_seen_at,
            created_at: r.created_at,
        }
    }
}

const SELECT: &str = "SELECT h.id, h.name, h.cluster_id, h.address, h.mode, h.reachable, h.accel, \
    h.accel_reason, h.cpu_vendor, h.cpu_model, h.cpu_cores, h.cpu_flags, h.cpu_supported_models, \
    h.memory_total_mib, h.memory_free_mib, h.load_cpu_pct, h.load_mem_pct, h.agent_version, \
    h.hypervisor_version, h.last_seen_at, h.created_at, \
    COALESCE((SELECT array_agg(hd.datastore_id ORDER BY hd.datastore_id) FROM host_datastores hd \
              WHERE hd.host_id = h.id), '{}') AS datastore_ids, \
    COALESCE((SELECT array_agg(hn.network_id ORDER BY hn.network_id) FROM host_networks hn \
              WHERE hn.host_id = h.id), '{}') AS network_ids, \
    (SELECT count(*) FROM vms v WHERE v.host_id = h.id) AS vm_count";

/// A page of hosts: each aggregate is one grouped scan over the page's hosts rather
/// than a subquery per row (GET /hosts is the API's hottest read).
const PAGE_REST: &str = ", \
    ds AS (SELECT host_id, array_agg(datastore_id ORDER BY datastore_id) AS ids FROM host_datastores \
           WHERE host_id = ANY(ARRAY(SELECT id FROM page)) GROUP BY host_id), \
    nets AS (SELECT host_id, array_agg(network_id ORDER BY network_id) AS ids FROM host_networks \
             WHERE host_id = ANY(ARRAY(SELECT id FROM page)) GROUP BY host_id), \
    vmc AS (SELECT host_id, count(*) AS n FROM vms WHERE host_id = ANY(ARRAY(SELECT id FROM page)) GROUP BY host_id) \
    SELECT h.id, h.name, h.cluster_id, h.address, h.mode, h.reachable, h.accel, \
    h.accel_reason, h.cpu_vendor, h.cpu_model, h.cpu_cores, h.cpu_flags, h.cpu_supported_models, \
    h.memory_total_mib, h.memory_free_mib, h.load_cpu_pct, h.load_mem_pct, h.agent_version, \
    h.hypervisor_version, h.last_seen_at, h.created_at, \
    COALESCE(ds.ids, '{}') AS datastore_ids, COALESCE(nets.ids, '{}') AS network_ids, \
    COALESCE(vmc.n, 0) AS vm_count \
    FROM page h LEFT JOIN ds ON ds.host_id = h.id LEFT JOIN nets ON nets.host_id = h.id \
    LEFT JOIN vmc ON vmc.host_id = h.id ORDER BY h.id";

/// What a heartbeat found.
#[derive(Debug, Clone, Copy)]
pub struct HeartbeatOutcome {
    /// The host had been `disconnected` and is back.
    pub reconnected: bool,
    /// Generation of the facts the control plane holds.
    pub report_generation: u64,
}

/// Filters of `GET /hosts`.
#[derive(Debug, Clone, Default)]
pub struct HostFilter {
    pub name: Option<String>,
    pub cluster_id: Option<ClusterId>,
}

impl Db {
    /// Whether the database answers (a round trip).
    pub async fn ping(&self) -> sqlx::Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    pub async fn host_list(
        &self,
        page: PageReq<Uuid>,
        f: &HostFilter,
    ) -> sqlx::Result<ferry_api::Page<Host>> {
        let rows: Vec<HostRow> = PagedQuery::new("hosts h")
            .filter("h.id > ", page.after)
            .filter("h.name = ", f.name.clone())
            .filter("h.cluster_id = ", f.cluster_id.map(|c| c.0))
            .finish_with("h.id", page.limit, PAGE_REST)
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        Ok(paginate(rows, page.limit, |r| r.id.to_string(), Host::from))
    }

    pub async fn host_fetch(&self, id: HostId) -> sqlx::Result<Option<Host>> {
        let row: Option<HostRow> =
            sqlx::query_as(&format!("{SELECT} FROM hosts h WHERE h.id = $1"))
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Host::from))
    }

    /// Whether the host's agent, by its last report, opens QEMU's return path on
    /// every outgoing move (false for a host not known).
    pub async fn host_opens_return_path(&self, id: HostId) -> sqlx::Result<bool> {
        let open: Option<bool> =
            sqlx::query_scalar("SELECT opens_return_path FROM hosts WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await?;
        Ok(open.unwrap_or(false))
    }

    pub async fn host_exists(&self, id: HostId) -> sqlx::Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM hosts WHERE id = $1)")
            .bind(id.0)
            .fetch_one(&self.pool)
            .await
    }

    /// Joins a host by name: the same name is the same host (same id) on every join.
    /// Returns the id and whether the host is new.
    pub async fn host_join(
        &self,
        name: &str,
        cluster_id: ClusterId,
        address: &str,
    ) -> sqlx::Result<(HostId, bool)> {
        let (id, inserted): (Uuid, bool) = sqlx::query_as(
            "INSERT INTO hosts (id, name, cluster_id, address, reachable, last_seen_at) \
             VALUES ($1, $2, $3, $4, true, now()) \
             ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, cluster_id = EXCLUDED.cluster_id, \
                 reachable = true, last_seen_at = now() \
             RETURNING id, (xmax = 0) AS inserted",
        )
        .bind(Uuid::new_v4())
        .bind(name)
        .bind(cluster_id.0)
        .bind(address)
        .fetch_one(&self.pool)
        .await?;
        Ok((HostId(id), inserted))
    }

    /// Stores a facts report if its generation is newer than the stored one; replaces
    /// the host's datastores and networks. Returns whether it was stored.
    pub async fn host_store_report(&self, id: HostId, r: &HostReport) -> sqlx::Result<bool> {
        let mut tx = self.pool.begin().await?;
        let cpu = r.cpu.clone().unwrap_or_default();
        let mem = r.memory.unwrap_or_default();
        let updated = sqlx::query(
            "UPDATE hosts SET address = $3, accel = $4, accel_reason = $5, cpu_vendor = $6, cpu_model = $7, \
             cpu_cores = $8, cpu_flags = $9, cpu_supported_models = $10, memory_total_mib = $11, \
             memory_free_mib = $12, agent_version = $13, hypervisor_version = $14, report_generation = $2, \
             opens_return_path = $15, last_seen_at = now() \
             WHERE id = $1 AND report_generation < $2",
        )
        .bind(id.0)
        .bind(r.generation as i64)
        .bind(&r.agent_address)
        .bind(Accel::parse(&r.accel).unwrap_or(Accel::Tcg).as_str())
        .bind(&r.accel_reason)
        .bind(&cpu.vendor)
        .bind(&cpu.model)
        .bind(cpu.cores.min(i32::MAX as u32) as i32)
        .bind(&cpu.flags)
        .bind(&cpu.supported_models)
        .bind(mem.total_mib.min(i64::MAX as u64) as i64)
        .bind(mem.free_mib.min(i64::MAX as u64) as i64)
        .bind(&r.agent_version)
        .bind(&r.hypervisor_version)
        .bind(r.opens_return_path)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(false);
        }

        sqlx::query("DELETE FROM host_datastores WHERE host_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        for ds in &r.datastores {
            let Ok(ds_id) = Uuid::parse_str(&ds.id) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO datastores (id, name, capacity_bytes, free_bytes) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, capacity_bytes = EXCLUDED.capacity_bytes, \
                 free_bytes = EXCLUDED.free_bytes",
            )
            .bind(ds_id)
            .bind(&ds.name)
            .bind(ds.capacity_bytes.min(i64::MAX as u64) as i64)
            .bind(ds.free_bytes.min(i64::MAX as u64) as i64)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO host_datastores (host_id, datastore_id, path) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.0)
            .bind(ds_id)
            .bind(&ds.path)
            .execute(&mut *tx)
            .await?;
        }

        sqlx::query("DELETE FROM host_networks WHERE host_id = $1")
            .bind(id.0)
            .execute(&mut *tx)
            .await?;
        for net in &r.networks {
            let net_id: Uuid = sqlx::query_scalar(
                "INSERT INTO networks (id, name) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            )
            .bind(Uuid::new_v4())
            .bind(&net.name)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO host_networks (host_id, network_id, uplink) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(id.0)
            .bind(net_id)
            .bind(&net.uplink)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records a heartbeat: liveness, load and free memory. `None` for an unknown host.
    pub async fn host_heartbeat(
        &self,
        id: HostId,
        cpu_pct: f32,
        mem_pct: f32,
        free_mib: u64,
    ) -> sqlx::Result<Option<HeartbeatOutcome>> {
        let row: Option<(bool, i64)> = sqlx::query_as(
            "UPDATE hosts h SET last_seen_at = now(), reachable = true, load_cpu_pct = $2, load_mem_pct = $3, \
             memory_free_mib = $4 FROM (SELECT id, reachable FROM hosts WHERE id = $1 FOR UPDATE) old \
             WHERE h.id = old.id RETURNING old.reachable, h.report_generation",
        )
        .bind(id.0)
        .bind(cpu_pct)
        .bind(mem_pct)
        .bind(free_mib.min(i64::MAX as u64) as i64)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|(was_reachable, generation)| HeartbeatOutcome {
            reconnected: !was_reachable,
            report_generation: generation.max(0) as u64,
        }))
    }

    /// Marks every reachable host not seen for `timeout` as unreachable; returns them.
    pub async fn host_mark_unreachable(
        &self,
        timeout: std::time::Duration,
    ) -> sqlx::Result<Vec<(HostId, String)>> {
        let rows: Vec<(Uuid, String)> = sqlx::query_as(
            "UPDATE hosts SET reachable = false WHERE reachable \
             AND (last_seen_at IS NULL OR last_seen_at < now() - make_interval(secs => $1)) \
             RETURNING id, name",
        )
        .bind(timeout.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id, n)| (HostId(id), n)).collect())
    }

    /// Every reachable host's id and agent address (for the periodic pull).
    pub async fn host_reachable_addresses(&self) -> sqlx::Result<Vec<(HostId, String)>> {
        let rows: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, address FROM hosts WHERE reachable ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id, a)| (HostId(id), a)).collect())
    }

    /// The host's cluster (for VM creation).
    pub async fn host_cluster(&self, id: HostId) -> sqlx::Result<Option<ClusterId>> {
        let c: Option<Uuid> = sqlx::query_scalar("SELECT cluster_id FROM hosts WHERE id = $1")
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(c.map(ClusterId))
    }
}
