//! `ferryctl rule [list C | show RULE | create C NAME KIND --vm V… [--host H…] | delete RULE]`:
//! a cluster's placement rules (affinity, anti-affinity, VM-host).

use clap::Subcommand;
use ferry_api::rule::{Rule, RuleCreate, RuleKind};

use super::Ctx;
use crate::table::Table;

#[derive(Debug, Subcommand)]
pub enum RuleCmd {
    /// The cluster's rules, and which of them are broken now.
    List { cluster: String },
    /// One rule (by id).
    Show { rule: uuid::Uuid },
    /// Create a rule. KIND: affinity, anti_affinity, must_run_on, must_not_run_on,
    /// should_run_on, should_not_run_on. Refused with the reason when it
    /// contradicts another rule or no placement can keep the must rules.
    Create {
        cluster: String,
        name: String,
        #[arg(value_parser = ["affinity", "anti_affinity", "must_run_on", "must_not_run_on", "should_run_on", "should_not_run_on"])]
        kind: String,
        /// A VM (name or id); repeat for more.
        #[arg(long = "vm", required = true)]
        vms: Vec<String>,
        /// A host (name or id) of a VM-host rule; repeat for more.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Delete a rule (by id).
    Delete { rule: uuid::Uuid },
}

fn table(rules: &[Rule]) -> String {
    let mut t = Table::new(&["ID", "NAME", "KIND", "VMS", "HOSTS", "HOLDS"]);
    for r in rules {
        t.row(vec![
            r.id.to_string(),
            r.name.clone(),
            r.kind.as_str().into(),
            r.vm_ids.len().to_string(),
            r.host_ids.len().to_string(),
            if r.violations.is_empty() {
                "yes".into()
            } else {
                format!("no: {}", r.violations.join("; "))
            },
        ]);
    }
    t.render()
}

pub async fn run(ctx: &Ctx, cmd: RuleCmd) -> anyhow::Result<()> {
    match cmd {
        RuleCmd::List { cluster } => {
            let id = ctx.resolve("clusters", &cluster).await?;
            let rules: Vec<Rule> = ctx.client.get(&format!("/clusters/{id}/rules")).await?;
            ctx.print(&rules, |r| table(r))
        }
        RuleCmd::Show { rule } => {
            let r: Rule = ctx.client.get(&format!("/rules/{rule}")).await?;
            ctx.print(&r, |r| table(std::slice::from_ref(r)))
        }
        RuleCmd::Create {
            cluster,
            name,
            kind,
            vms,
            hosts,
        } => {
            let id = ctx.resolve("clusters", &cluster).await?;
            let kind = RuleKind::parse(&kind)
                .ok_or_else(|| anyhow::anyhow!("unknown rule kind {kind}"))?;
            let r: Rule = ctx
                .client
                .post(
                    &format!("/clusters/{id}/rules"),
                    &RuleCreate {
                        name,
                        kind,
                        vms,
                        hosts,
                    },
                )
                .await?;
            ctx.print(&r, |r| {
                format!("rule {} ({}) created: {}", r.name, r.kind.as_str(), r.id)
            })
        }
        RuleCmd::Delete { rule } => {
            ctx.client.delete(&format!("/rules/{rule}")).await?;
            ctx.print(&serde_json::json!({"deleted": rule}), |_| {
                format!("rule {rule} deleted")
            })
        }
    }
}
