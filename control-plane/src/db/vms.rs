//! VMs: inventory (the control plane's intent: spec and host) and runtime state
//! (owned by the agent, stored only when its generation is newer).

use chrono::{DateTime, Utc};
use ferry_api::vm::{Boot, Disk, MigrationPolicy, Nic, PowerState, Vm};
use ferry_api::{ClusterId, DatastoreId, HostId, NetworkId, VmId};
use rand::Rng;
use sqlx::types::Json;
use uuid::Uuid;

use super::{paginate, unsigned, Db, PageReq, PagedQuery};

#[derive(Debug, sqlx::FromRow)]
pub struct VmRow {
    pub id: Uuid,
    pub name: String,
    pub cluster_id: Uuid,
    pub host_id: Option<Uuid>,
    pub power_state: String,
    pub vcpus: i32,
    pub memory_mib: i64,
    pub cpu_model: String,
    pub machine_type: String,
    pub boot: Option<Json<Boot>>,
    pub migration_policy: Json<MigrationPolicy>,
    pub drs_automation: Option<String>,
    pub created_at: DateTime<Utc>,
    pub disks: Json<Vec<Disk>>,
    pub nics: Json<Vec<Nic>>,
}

impl From<VmRow> for Vm {
    fn from(r: VmRow) -> Self {
        Vm {
            id: VmId(r.id),
            name: r.name,
            host_id: r.host_id.map(HostId),
            cluster_id: ClusterId(r.cluster_id),
            power_state: PowerState::parse(&r.power_state).unwrap_or(PowerState::Stopped),
            vcpus: r.vcpus.max(0) as u32,
            memory_mib: unsigned(r.memory_mib),
            cpu_model: r.cpu_model,
            machine_type: r.machine_type,
            disks: r.disks.0,
            nics: r.nics.0,
            boot: r.boot.map(|b| b.0),
            migration_policy: r.migration_policy.0,
            drs_automation: r
                .drs_automation
                .as_deref()
                .and_then(ferry_api::drs::VmDrsAutomation::parse),
            created_at: r.created_at,
        }
    }
}

const SELECT: &str = "SELECT v.id, v.name, v.cluster_id, v.host_id, v.power_state, v.vcpus, v.memory_mib, \
    v.cpu_model, v.machine_type, v.boot, v.migration_policy, v.drs_automation, v.created_at, \
    COALESCE((SELECT json_agg(json_build_object('datastore_id', d.datastore_id, 'size_bytes', d.size_bytes, \
              'path', d.path) ORDER BY d.idx) FROM vm_disks d WHERE d.vm_id = v.id), '[]'::json) AS disks, \
    COALESCE((SELECT json_agg(json_build_object('network_id', n.network_id, 'mac', n.mac) ORDER BY n.idx) \
              FROM vm_nics n WHERE n.vm_id = v.id), '[]'::json) AS nics";

/// A page of VMs: disks and NICs aggregated by one grouped scan each.
const PAGE_REST: &str = ", \
    dk AS (SELECT vm_id, json_agg(json_build_object('datastore_id', datastore_id, 'size_bytes', size_bytes, \
           'path', path) ORDER BY idx) AS j FROM vm_disks WHERE vm_id = ANY(ARRAY(SELECT id FROM page)) GROUP BY vm_id), \
    nc AS (SELECT vm_id, json_agg(json_build_object('network_id', network_id, 'mac', mac) ORDER BY idx) AS j \
           FROM vm_nics WHERE vm_id = ANY(ARRAY(SELECT id FROM page)) GROUP BY vm_id) \
    SELECT v.id, v.name, v.cluster_id, v.host_id, v.power_state, v.vcpus, v.memory_mib, \
    v.cpu_model, v.machine_type, v.boot, v.migration_policy, v.drs_automation, v.created_at, \
    COALESCE(dk.j, '[]'::json) AS disks, COALESCE(nc.j, '[]'::json) AS nics \
    FROM page v LEFT JOIN dk ON dk.vm_id = v.id LEFT JOIN nc ON nc.vm_id = v.id ORDER BY ";

/// A VM ready to be stored: validated, with its cluster and host resolved.
#[derive(Debug, Clone)]
pub struct NewVm {
    pub name: String,
    pub cluster_id: ClusterId,
    pub host_id: Option<HostId>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub cpu_model: String,
    pub machine_type: String,
    pub disks: Vec<Disk>,
    pub nics: Vec<NetworkId>,
    pub boot: Option<Boot>,
    pub migration_policy: MigrationPolicy,
}

/// The orders `GET /vms?sort=` offers; each ends on the id, so pages are stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
pub enum VmSort {
    #[default]
    #[serde(rename = "id")]
    Id,
    #[serde(rename = "name")]
    Name,
    #[serde(rename = "-name")]
    NameDesc,
    #[serde(rename = "memory_mib")]
    Memory,
    #[serde(rename = "-memory_mib")]
    MemoryDesc,
    #[serde(rename = "created_at")]
    Created,
    #[serde(rename = "-created_at")]
    CreatedDesc,
}

/// Where the previous page of a sorted list ended: its last row's sort key and id.
#[derive(Debug, Clone, PartialEq)]
pub enum VmAfter {
    Id(Uuid),
    Name(String),
    Memory(i64, Uuid),
    Created(DateTime<Utc>, Uuid),
}

impl VmSort {
    /// The `ORDER BY` list over alias `v`.
    fn order(self) -> &'static str {
        match self {
            VmSort::Id => "v.id",
            VmSort::Name => "v.name",
            VmSort::NameDesc => "v.name DESC",
            VmSort::Memory => "v.memory_mib, v.id",
            VmSort::MemoryDesc => "v.memory_mib DESC, v.id DESC",
            VmSort::Created => "v.created_at, v.id",
            VmSort::CreatedDesc => "v.created_at DESC, v.id DESC",
        }
    }

    fn descending(self) -> bool {
        matches!(
            self,
            VmSort::NameDesc | VmSort::MemoryDesc | VmSort::CreatedDesc
        )
    }

    /// The cursor of a page ending on `r`: the id alone for the default order, else
    /// the sort key and id, URL-safe base64 of JSON.
    fn cursor_of(self, r: &VmRow) -> String {
        use base64::Engine;
        let key = match self {
            VmSort::Id => return r.id.to_string(),
            VmSort::Name | VmSort::NameDesc => serde_json::json!({ "name": r.name }),
            VmSort::Memory | VmSort::MemoryDesc => {
                serde_json::json!({ "memory_mib": r.memory_mib, "id": r.id })
            }
            VmSort::Created | VmSort::CreatedDesc => {
                serde_json::json!({ "created_at": r.created_at.timestamp_micros(), "id": r.id })
            }
        };
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key.to_string())
    }

    /// Reads a cursor this order wrote; `None` for anything else.
    pub fn parse_cursor(self, c: &str) -> Option<VmAfter> {
        use base64::Engine;
        if self == VmSort::Id {
            return c.parse().ok().map(VmAfter::Id);
        }
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
        let id = || v.get("id")?.as_str()?.parse::<Uuid>().ok();
        match self {
            VmSort::Id => None,
            VmSort::Name | VmSort::NameDesc => {
                Some(VmAfter::Name(v.get("name")?.as_str()?.to_string()))
            }
            VmSort::Memory | VmSort::MemoryDesc => {
                Some(VmAfter::Memory(v.get("memory_mib")?.as_i64()?, id()?))
            }
            VmSort::Created | VmSort::CreatedDesc => Some(VmAfter::Created(
                DateTime::<Utc>::from_timestamp_micros(v.get("created_at")?.as_i64()?)?,
                id()?,
            )),
        }
    }
}

/// Filters of `GET /vms`.
#[derive(Debug, Clone, Default)]
pub struct VmFilter {
    pub name: Option<String>,
    pub host_id: Option<HostId>,
    pub cluster_id: Option<ClusterId>,
    pub power_state: Option<ferry_api::vm::PowerState>,
    /// Names containing this, in any case.
    pub search: Option<String>,
}

/// `s` as a `LIKE` pattern matching names that contain it (its `%`, `_` and `\`
/// taken literally).
fn contains_pattern(s: &str) -> String {
    let mut out = String::from("%");
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// A locally administered unicast MAC in QEMU's customary `52:54:00` range.
fn random_mac() -> String {
    let b: [u8; 3] = rand::thread_rng().gen();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2])
}

impl Db {
    pub async fn vm_list(
        &self,
        page: PageReq<VmAfter>,
        sort: VmSort,
        f: &VmFilter,
    ) -> sqlx::Result<ferry_api::Page<Vm>> {
        let cmp = if sort.descending() { "<" } else { ">" };
        let mut q = PagedQuery::new("vms v");
        q = match page.after {
            None => q,
            Some(VmAfter::Id(id)) => q.filter("v.id > ", Some(id)),
            Some(VmAfter::Name(n)) => q.filter(&format!("v.name {cmp} "), Some(n)),
            Some(VmAfter::Memory(m, id)) => {
                q.filter_pair(&format!("(v.memory_mib, v.id) {cmp} "), m, id)
            }
            Some(VmAfter::Created(at, id)) => {
                q.filter_pair(&format!("(v.created_at, v.id) {cmp} "), at, id)
            }
        };
        let rows: Vec<VmRow> = q
            .filter("v.name = ", f.name.clone())
            .filter("v.host_id = ", f.host_id.map(|h| h.0))
            .filter("v.cluster_id = ", f.cluster_id.map(|c| c.0))
            .filter(
                "v.power_state = ",
                f.power_state.map(|p| p.as_str().to_string()),
            )
            .filter("v.name ILIKE ", f.search.as_deref().map(contains_pattern))
            .finish_with(
                sort.order(),
                page.limit,
                &format!("{PAGE_REST}{}", sort.order()),
            )
            .build_query_as()
            .fetch_all(&self.pool)
            .await?;
        Ok(paginate(rows, page.limit, |r| sort.cursor_of(r), Vm::from))
    }

    pub async fn vm_fetch(&self, id: VmId) -> sqlx::Result<Option<Vm>> {
        let row: Option<VmRow> = sqlx::query_as(&format!("{SELECT} FROM vms v WHERE v.id = $1"))
            .bind(id.0)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Vm::from))
    }

    /// Stores a VM with its disks and NICs in one transaction, allocating each NIC a
    /// MAC address unique across the inventory.
    pub async fn vm_insert(&self, v: &NewVm) -> sqlx::Result<VmId> {
        let id = VmId::new();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO vms (id, name, cluster_id, host_id, vcpus, memory_mib, cpu_model, machine_type, boot, \
             migration_policy) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.0)
        .bind(&v.name)
        .bind(v.cluster_id.0)
        .bind(v.host_id.map(|h| h.0))
        .bind(v.vcpus as i32)
        .bind(v.memory_mib as i64)
        .bind(&v.cpu_model)
        .bind(&v.machine_type)
        .bind(v.boot.as_ref().map(Json))
        .bind(Json(&v.migration_policy))
        .execute(&mut *tx)
        .await?;
        for (idx, d) in v.disks.iter().enumerate() {
            sqlx::query("INSERT INTO vm_disks (vm_id, idx, datastore_id, size_bytes, path) VALUES ($1, $2, $3, $4, $5)")
                .bind(id.0)
                .bind(idx as i32)
                .bind(d.datastore_id.0)
                .bind(d.size_bytes as i64)
                .bind(&d.path)
                .execute(&mut *tx)
                .await?;
        }
        for (idx, net) in v.nics.iter().enumerate() {
            loop {
                let placed = sqlx::query(
                    "INSERT INTO vm_nics (vm_id, idx, network_id, mac) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (mac) DO NOTHING",
                )
                .bind(id.0)
                .bind(idx as i32)
                .bind(net.0)
                .bind(random_mac())
                .execute(&mut *tx)
                .await?;
                if placed.rows_affected() == 1 {
                    break;
                }
            }
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Re-homes a stopped VM from `from` to `to` (its disks are on shared storage,
    /// so nothing moves but the record). False if it is no longer stopped there.
    pub async fn vm_rehome(&self, id: VmId, from: HostId, to: HostId) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE vms SET host_id = $3, updated_at = now() \
             WHERE id = $1 AND host_id = $2 AND power_state = 'stopped'",
        )
        .bind(id.0)
        .bind(from.0)
        .bind(to.0)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every VM recorded on `host`.
    pub async fn vm_list_on_host(&self, host: HostId) -> sqlx::Result<Vec<Vm>> {
        let rows: Vec<VmRow> = sqlx::query_as(&format!(
            "{SELECT} FROM vms v WHERE v.host_id = $1 ORDER BY v.memory_mib, v.id"
        ))
        .bind(host.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Vm::from).collect())
    }

    /// The running VMs of a cluster that have a host (what balancing weighs).
    pub async fn vm_list_cluster_running(&self, cluster: ClusterId) -> sqlx::Result<Vec<Vm>> {
        let rows: Vec<VmRow> = sqlx::query_as(&format!(
            "{SELECT} FROM vms v WHERE v.cluster_id = $1 AND v.power_state = 'running' \
             AND v.host_id IS NOT NULL ORDER BY v.id"
        ))
        .bind(cluster.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Vm::from).collect())
    }

    /// Every VM of `cluster`.
    pub async fn vm_list_cluster(&self, cluster: ClusterId) -> sqlx::Result<Vec<Vm>> {
        let rows: Vec<VmRow> = sqlx::query_as(&format!(
            "{SELECT} FROM vms v WHERE v.cluster_id = $1 ORDER BY v.id"
        ))
        .bind(cluster.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Vm::from).collect())
    }

    /// The VM's own balancing level (`None`: the cluster's). False if no such VM.
    pub async fn vm_set_drs_automation(
        &self,
        id: VmId,
        level: Option<ferry_api::drs::VmDrsAutomation>,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query("UPDATE vms SET drs_automation = $2, updated_at = now() WHERE id = $1")
            .bind(id.0)
            .bind(level.map(|l| l.as_str()))
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    pub async fn vm_set_host_on(
        conn: &mut sqlx::PgConnection,
        id: VmId,
        host: HostId,
    ) -> sqlx::Result<()> {
        sqlx::query("UPDATE vms SET host_id = $2, updated_at = now() WHERE id = $1")
            .bind(id.0)
            .bind(host.0)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Stores runtime state reported by `host`, only for a VM on that host and only
    /// if `generation` is newer than what is stored. Returns whether it was stored.
    pub async fn vm_store_runtime(
        &self,
        id: VmId,
        host: HostId,
        state: PowerState,
        generation: u64,
    ) -> sqlx::Result<bool> {
        let r = sqlx::query(
            "UPDATE vms SET power_state = $3, runtime_generation = $4, updated_at = now() \
             WHERE id = $1 AND host_id = $2 AND runtime_generation < $4",
        )
        .bind(id.0)
        .bind(host.0)
        .bind(state.as_str())
        .bind(generation.min(i64::MAX as u64) as i64)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Deletes a stopped VM; returns false when there is no such stopped VM.
    pub async fn vm_delete_stopped(&self, id: VmId) -> sqlx::Result<bool> {
        let r = sqlx::query("DELETE FROM vms WHERE id = $1 AND power_state = 'stopped'")
            .bind(id.0)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Which of `ids` exist as datastores (for validating a VM's disks).
    pub async fn datastore_ids_existing(
        &self,
        ids: &[DatastoreId],
    ) -> sqlx::Result<Vec<DatastoreId>> {
        let ids: Vec<Uuid> = ids.iter().map(|d| d.0).collect();
        let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM datastores WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(found.into_iter().map(DatastoreId).collect())
    }

    /// Which of `ids` exist as networks (for validating a VM's NICs).
    pub async fn network_ids_existing(&self, ids: &[NetworkId]) -> sqlx::Result<Vec<NetworkId>> {
        let ids: Vec<Uuid> = ids.iter().map(|n| n.0).collect();
        let found: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM networks WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        Ok(found.into_iter().map(NetworkId).collect())
    }
}
