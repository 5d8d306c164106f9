//! Shared parts of Ferry's benchmark programs (each a `[[bin]]` of this crate).

pub mod lab;
