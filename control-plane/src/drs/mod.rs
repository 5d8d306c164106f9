//! Cluster balancing (DRS): the imbalance metric (`imbalance`) and the balancing
//! pass (`balance`), both pure — measurements in, moves out — in the manner of
//! `sagas/escalation.rs`.

pub mod balance;
pub mod imbalance;
pub mod reference;
