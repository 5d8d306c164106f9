//! Ferry's sagas, each a declared list of nodes run by the executor in
//! `crate::saga`: the live migration (`migrate`, with its `transfer` node in
//! `migrate_transfer` and `auto`'s decisions in `escalation`) and the evacuation of a
//! host for maintenance (`evacuate`).

pub mod escalation;
pub mod evacuate;
pub mod migrate;
pub mod migrate_storage;
pub mod migrate_transfer;
