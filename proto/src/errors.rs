//! The Agent service's errors as a type on both ends. The agent sends every failure
//! as a `tonic::Status` whose `details` are an encoded [`AgentError`] with a stable
//! [`ErrorCode`]; the control plane reads the code back with [`Failure::of`] and
//! decides on it — never on the message, which is for people.

use prost::Message;
use tonic::{Code, Status};

pub use crate::v1::{AgentError, ErrorCode};

impl AgentError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
        }
    }

    /// The wire form: a gRPC status whose code fits, carrying this error in `details`.
    pub fn into_status(self) -> Status {
        let grpc = match self.code() {
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::Invalid => Code::InvalidArgument,
            ErrorCode::Busy => Code::Aborted,
            ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
            _ => Code::FailedPrecondition,
        };
        let details = self.encode_to_vec();
        Status::with_details(grpc, self.message, details.into())
    }
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AgentError {}

/// How an Agent call failed, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The agent answered with a typed error.
    Agent(ErrorCode, String),
    /// The agent was not reached, or answered without a typed error (an older or
    /// foreign peer, a transport failure): nothing is known of what happened.
    Unreachable(String),
}

impl Failure {
    pub fn of(s: &Status) -> Self {
        match AgentError::decode(s.details()) {
            Ok(e) if !s.details().is_empty() => Failure::Agent(e.code(), e.message),
            _ => Failure::Unreachable(s.message().to_string()),
        }
    }

    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Failure::Agent(c, _) => Some(*c),
            Failure::Unreachable(_) => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Failure::Agent(_, m) | Failure::Unreachable(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Agent(_, m) => f.write_str(m),
            Failure::Unreachable(m) => write!(f, "agent unreachable: {m}"),
        }
    }
}

impl std::error::Error for Failure {}

impl From<Status> for Failure {
    fn from(s: Status) -> Self {
        Failure::of(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_error_survives_the_wire() {
        let s =
            AgentError::new(ErrorCode::AlreadyDone, "the migration had completed").into_status();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            Failure::of(&s),
            Failure::Agent(ErrorCode::AlreadyDone, "the migration had completed".into())
        );
    }

    #[test]
    fn an_untyped_status_is_unreachable_not_a_code() {
        let s = Status::unavailable("connection refused");
        assert_eq!(
            Failure::of(&s),
            Failure::Unreachable("connection refused".into())
        );
        assert_eq!(Failure::of(&s).code(), None);
    }
}
