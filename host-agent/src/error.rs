//! Typed failures of the agent's operations. Where the caller must decide on a
//! failure (the VM is not here, the migration already completed, it is past
//! switchover), the backend raises [`coded`]; the gRPC edge (`service`) sends the
//! code in the status details (`ferry_proto::errors`), with the whole error chain as
//! the message. Anything uncoded goes out with the operation's default code.

use ferry_proto::errors::{AgentError, ErrorCode};
use tonic::Status;

/// An error the control plane can decide on.
pub fn coded(code: ErrorCode, message: impl Into<String>) -> anyhow::Error {
    AgentError::new(code, message).into()
}

/// The wire form of `e`: its own code if it carries one, else `default`.
pub fn to_status(e: anyhow::Error, default: ErrorCode) -> Status {
    let code = e
        .chain()
        .find_map(|c| c.downcast_ref::<AgentError>())
        .map(|a| a.code())
        .unwrap_or(default);
    AgentError::new(code, format!("{e:#}")).into_status()
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;
    use ferry_proto::errors::Failure;

    #[test]
    fn the_code_survives_context() {
        let e = Err::<(), _>(coded(ErrorCode::NotFound, "VM x is not on this host"))
            .context("migrate out")
            .unwrap_err();
        let f = Failure::of(&to_status(e, ErrorCode::QemuFailed));
        assert_eq!(f.code(), Some(ErrorCode::NotFound));
        assert_eq!(f.message(), "migrate out: VM x is not on this host");
    }

    #[test]
    fn uncoded_errors_take_the_default() {
        let f = Failure::of(&to_status(
            anyhow::anyhow!("qmp: boom"),
            ErrorCode::QemuFailed,
        ));
        assert_eq!(f.code(), Some(ErrorCode::QemuFailed));
    }
}
