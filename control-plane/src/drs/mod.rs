//! Cluster balancing (DRS): the imbalance metric (`imbalance`), the repairs of
//! broken placement rules (`repair`) and the balancing pass (`balance`), all
//! pure — measurements in, moves out — in the manner of `sagas/escalation.rs`.

pub mod balance;
pub mod imbalance;
pub mod reference;
pub mod repair;
