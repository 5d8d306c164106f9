//! Ferry's internal gRPC API: the `ControlPlane` service (agents call it) and the
//! `Agent` service (the control plane calls it), generated from `proto/ferry/v1`,
//! and the typed error every Agent call fails with (`errors`).
#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("ferry.v1");
}

pub mod errors;
