//! Sagas: durable multi-step operations (DESIGN principle 3). Each records its
//! parameters and every step event in PostgreSQL (`db::sagas`); each step before
//! the point of no return has an undo; a recovery pass at start-up finishes or
//! unwinds what a previous control plane left running.

pub mod escalation;
pub mod migrate;
