//! Placement rules at the application layer: creating one (names resolved, shape
//! checked, then validated against the cluster's other rules and capacity inside
//! a transaction holding the cluster), listing them with what breaks them now,
//! deleting; and what placement, evacuation, balancing and the migration checks
//! read of them (`rules_context`: the rules, where the VMs are, names).

use std::collections::HashMap;

use chrono::Utc;
use ferry_api::host::{Host, HostState};
use ferry_api::rule::{Rule, RuleCreate};
use ferry_api::vm::{PowerState, Vm};
use ferry_api::{ClusterId, HostId, RuleId, VmId};

use super::host_fit::QEMU_OVERHEAD_MIB;
use super::{names, App};
use crate::db::events::NewEvent;
use crate::db::Db;
use crate::error::{is_unique_violation, ApiError, ApiResult};
use crate::rules::validate::{validate, HostCap};
use crate::rules::{Breach, Names, Placement, RuleSet};
use ferry_api::problem::Reason;

/// What a decision about a VM's host reads of the rules.
pub struct RulesContext {
    pub rules: RuleSet,
    /// Running VMs' hosts; a VM under migration at its destination.
    pub at: Placement,
    pub names: Names,
}

impl RulesContext {
    /// `vm` is the one being placed: it counts as placed nowhere.
    pub fn without(mut self, vm: VmId) -> Self {
        self.at.remove(&vm);
        self
    }

    /// The must rules `vm` would break on `host`.
    pub fn must_breaches(&self, vm: VmId, host: HostId) -> Vec<Breach> {
        self.rules.must_breaches(vm, host, &self.at, &self.names)
    }

    /// `hosts` split into those where `vm` breaks no must rule, and the reasons
    /// (`rule_violation`) the others are out.
    pub fn filter(&self, vm: VmId, hosts: Vec<Host>) -> (Vec<Host>, Vec<Reason>) {
        let mut why = Vec::new();
        let mut kept = Vec::new();
        for h in hosts {
            let b = self.must_breaches(vm, h.id);
            match b.first() {
                None => kept.push(h),
                Some(first) if why.len() < 20 => why.push(Reason {
                    code: "rule_violation".into(),
                    detail: first.detail.clone(),
                }),
                Some(_) => {}
            }
        }
        (kept, why)
    }

    /// `ranked` (best first) reordered so the hosts where `vm` keeps its should
    /// rules come first, each part in its own order.
    pub fn should_first(&self, vm: VmId, ranked: &mut [Host]) {
        if self.rules.of(vm).next().is_none() {
            return;
        }
        ranked.sort_by_key(|h| {
            self.rules
                .breaches(vm, h.id, &self.at, &self.names)
                .iter()
                .any(|b| !b.is_must())
        });
    }
}

fn is_placed(vm: &Vm) -> bool {
    matches!(
        vm.power_state,
        PowerState::Running | PowerState::Paused | PowerState::Migrating
    )
}

impl App {
    /// The rules of `cluster` and where its VMs run. With `leaving`, the VMs still
    /// on that host count as placed nowhere (an evacuation: they are leaving it).
    pub async fn rules_context(
        &self,
        cluster: ClusterId,
        leaving: Option<HostId>,
    ) -> ApiResult<RulesContext> {
        let rules = self.db.rule_list_cluster(cluster).await?;
        let vms = self.db.vm_list_cluster(cluster).await?;
        let hosts = self.cluster_hosts(cluster).await?;
        let mut at: Placement = vms
            .iter()
            .filter(|v| is_placed(v))
            .filter_map(|v| v.host_id.map(|h| (v.id, h)))
            .filter(|(_, h)| Some(*h) != leaving)
            .collect();
        if !rules.is_empty() {
            for (vm, dest) in self.db.migration_active_destinations(cluster).await? {
                at.insert(vm, dest);
            }
        }
        Ok(RulesContext {
            rules: RuleSet::new(rules),
            at,
            names: names_of(&vms, &hosts),
        })
    }

    pub async fn rule_list(&self, cluster: ClusterId) -> ApiResult<Vec<Rule>> {
        self.cluster_get(cluster).await?;
        let ctx = self.rules_context(cluster, None).await?;
        let broken = ctx.rules.violations(&ctx.at, &ctx.names);
        Ok(ctx
            .rules
            .rules
            .into_iter()
            .map(|mut r| {
                r.violations = broken.get(&r.id).cloned().unwrap_or_default();
                r
            })
            .collect())
    }

    pub async fn rule_get(&self, id: RuleId) -> ApiResult<Rule> {
        let r = self
            .db
            .rule_fetch(id)
            .await?
            .ok_or_else(|| ApiError::not_found("rule", id))?;
        self.rule_list(r.cluster_id)
            .await?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| ApiError::not_found("rule", id))
    }

    pub async fn rule_delete(&self, id: RuleId) -> ApiResult<()> {
        let r = self
            .db
            .rule_fetch(id)
            .await?
            .ok_or_else(|| ApiError::not_found("rule", id))?;
        if !self.db.rule_delete(id).await? {
            return Err(ApiError::not_found("rule", id));
        }
        self.events
            .record(
                NewEvent::info("rule.deleted", format!("rule {} deleted", r.name))
                    .data(serde_json::json!({"rule_id": id, "cluster_id": r.cluster_id})),
            )
            .await;
        Ok(())
    }

    pub async fn rule_create(&self, cluster: ClusterId, req: RuleCreate) -> ApiResult<Rule> {
        self.cluster_get(cluster).await?;
        names::validate("rule name", &req.name)?;
        let vms = self.db.vm_list_cluster(cluster).await?;
        let hosts = self.cluster_hosts(cluster).await?;
        let vm_ids = resolve(&req.vms, "vms", "unknown_vm", |s| {
            vms.iter()
                .find(|v| v.name == s || v.id.to_string() == s)
                .map(|v| v.id)
        })?;
        let host_ids = resolve(&req.hosts, "hosts", "unknown_host", |s| {
            hosts
                .iter()
                .find(|h| h.name == s || h.id.to_string() == s)
                .map(|h| h.id)
        })?;
        let min_vms = if req.kind.names_hosts() { 1 } else { 2 };
        if vm_ids.len() < min_vms {
            return Err(ApiError::unprocessable(
                "invalid_rule",
                format!(
                    "a {} rule names at least {min_vms} VM(s) of the cluster",
                    req.kind.as_str()
                ),
            ));
        }
        match (req.kind.names_hosts(), host_ids.is_empty()) {
            (true, true) => {
                return Err(ApiError::unprocessable(
                    "invalid_rule",
                    format!(
                        "a {} rule names at least one host of the cluster",
                        req.kind.as_str()
                    ),
                ))
            }
            (false, false) => {
                return Err(ApiError::unprocessable(
                    "invalid_rule",
                    format!("a {} rule names VMs only, not hosts", req.kind.as_str()),
                ))
            }
            _ => {}
        }
        let rule = Rule {
            id: RuleId::new(),
            cluster_id: cluster,
            name: req.name.clone(),
            kind: req.kind,
            vm_ids,
            host_ids,
            violations: Vec::new(),
            created_at: Utc::now(),
        };
        let caps: Vec<HostCap> = hosts
            .iter()
            .map(|h| HostCap {
                id: h.id,
                mem_mib: h.memory.total_mib,
                eligible: h.state == HostState::Connected,
            })
            .collect();
        let demand: HashMap<VmId, u64> = vms
            .iter()
            .map(|v| {
                let need = if is_placed(v) {
                    v.memory_mib + QEMU_OVERHEAD_MIB
                } else {
                    0
                };
                (v.id, need)
            })
            .collect();
        let names = names_of(&vms, &hosts);
        let mut tx = self.db.rule_lock_cluster(cluster).await?;
        let mut all = Db::rule_list_cluster_on(&mut tx, cluster).await?;
        all.push(rule.clone());
        if let Err(r) = validate(&all, &caps, &demand, &names) {
            return Err(ApiError::conflict(r.code, r.detail));
        }
        match Db::rule_insert_on(&mut tx, &rule).await {
            Err(e) if is_unique_violation(&e, None) => {
                return Err(ApiError::conflict(
                    "name_taken",
                    format!("the cluster has a rule named {} already", rule.name),
                ))
            }
            r => r?,
        }
        tx.commit().await?;
        self.events
            .record(
                NewEvent::info(
                    "rule.created",
                    format!("rule {} ({}) created", rule.name, rule.kind.as_str()),
                )
                .data(serde_json::json!({"rule_id": rule.id, "cluster_id": cluster})),
            )
            .await;
        self.rule_get(rule.id).await
    }
}

/// Each name or id in `given`, resolved; 422 `unknown` for one that is not of the
/// cluster, `invalid_rule` for one named twice.
fn resolve<T: PartialEq + Copy>(
    given: &[String],
    field: &str,
    unknown: &'static str,
    find: impl Fn(&str) -> Option<T>,
) -> ApiResult<Vec<T>> {
    let mut out = Vec::new();
    for s in given {
        let id = find(s).ok_or_else(|| {
            ApiError::unprocessable(unknown, format!("{field}: {s} is not in the cluster"))
        })?;
        if out.contains(&id) {
            return Err(ApiError::unprocessable(
                "invalid_rule",
                format!("{field}: {s} is named twice"),
            ));
        }
        out.push(id);
    }
    Ok(out)
}

fn names_of(vms: &[Vm], hosts: &[Host]) -> Names {
    Names {
        vms: vms.iter().map(|v| (v.id, v.name.clone())).collect(),
        hosts: hosts.iter().map(|h| (h.id, h.name.clone())).collect(),
    }
}
