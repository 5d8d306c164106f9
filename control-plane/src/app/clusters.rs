//! Cluster creation and changes.

use ferry_api::cluster::{Cluster, ClusterCreate, ClusterPatch, Drs, DrsPatch};
use ferry_api::ClusterId;

use super::{names, App};
use crate::db::clusters::ClusterFields;
use crate::db::events::NewEvent;
use crate::error::{is_unique_violation, ApiError, ApiResult};

fn apply_drs(mut drs: Drs, patch: Option<&DrsPatch>) -> ApiResult<Drs> {
    if let Some(p) = patch {
        if let Some(a) = p.automation {
            drs.automation = a;
        }
        if let Some(t) = p.threshold {
            if !(1..=5).contains(&t) {
                return Err(ApiError::unprocessable(
                    "out_of_range",
                    format!("drs.threshold must be 1..5, not {t}"),
                ));
            }
            drs.threshold = t;
        }
        if let Some(i) = p.interval_s {
            if !(10..=86_400).contains(&i) {
                return Err(ApiError::unprocessable(
                    "out_of_range",
                    format!("drs.interval_s must be 10..86400 seconds, not {i}"),
                ));
            }
            drs.interval_s = i;
        }
    }
    Ok(drs)
}

fn validate_baseline(b: &Option<String>) -> ApiResult<()> {
    if let Some(b) = b {
        names::validate("CPU baseline", b)?;
    }
    Ok(())
}

impl App {
    pub async fn cluster_create(&self, req: ClusterCreate) -> ApiResult<Cluster> {
        names::validate("cluster", &req.name)?;
        validate_baseline(&req.cpu_baseline)?;
        let fields = ClusterFields {
            name: req.name,
            cpu_baseline: req.cpu_baseline,
            drs: apply_drs(Drs::default(), req.drs.as_ref())?,
        };
        let id = self.db.cluster_insert(&fields).await.map_err(|e| {
            if is_unique_violation(&e, None) {
                ApiError::conflict(
                    "duplicate_name",
                    format!("a cluster named {:?} already exists", fields.name),
                )
            } else {
                e.into()
            }
        })?;
        self.events
            .record(
                NewEvent::info(
                    "cluster.created",
                    format!("cluster {} created", fields.name),
                )
                .data(serde_json::json!({"cluster_id": id})),
            )
            .await;
        self.cluster_get(id).await
    }

    pub async fn cluster_get(&self, id: ClusterId) -> ApiResult<Cluster> {
        self.db
            .cluster_fetch(id)
            .await?
            .ok_or_else(|| ApiError::not_found("cluster", id))
    }

    pub async fn cluster_patch(&self, id: ClusterId, patch: ClusterPatch) -> ApiResult<Cluster> {
        let cur = self.cluster_get(id).await?;
        let mut fields = ClusterFields {
            name: cur.name,
            cpu_baseline: cur.cpu_baseline,
            drs: cur.drs,
        };
        if let Some(n) = patch.name {
            names::validate("cluster", &n)?;
            fields.name = n;
        }
        if let Some(b) = patch.cpu_baseline {
            validate_baseline(&b)?;
            fields.cpu_baseline = b;
        }
        fields.drs = apply_drs(fields.drs, patch.drs.as_ref())?;
        let updated = self.db.cluster_update(id, &fields).await.map_err(|e| {
            if is_unique_violation(&e, None) {
                ApiError::conflict(
                    "duplicate_name",
                    format!("a cluster named {:?} already exists", fields.name),
                )
            } else {
                e.into()
            }
        })?;
        if !updated {
            return Err(ApiError::not_found("cluster", id));
        }
        self.events
            .record(
                NewEvent::info(
                    "cluster.updated",
                    format!("cluster {} updated", fields.name),
                )
                .data(serde_json::json!({"cluster_id": id})),
            )
            .await;
        self.cluster_get(id).await
    }
}
