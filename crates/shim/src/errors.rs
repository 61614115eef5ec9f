//! One error type for the shim, mapped to ttrpc status codes in one place so `ctr` and the
//! kubelet see the real cause.

use containerd_shim_protos::ttrpc;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = ShimError> = std::result::Result<T, E>;

impl ShimError {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        ShimError::Io {
            context: context.into(),
            source,
        }
    }

    fn code(&self) -> ttrpc::Code {
        match self {
            ShimError::NotFound(_) => ttrpc::Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            ShimError::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            ShimError::InvalidArgument(_) => ttrpc::Code::INVALID_ARGUMENT,
            ShimError::Unimplemented(_) => ttrpc::Code::UNIMPLEMENTED,
            ShimError::Io { .. } | ShimError::Internal(_) => ttrpc::Code::INTERNAL,
        }
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

/// Adds context to an io::Result.
pub trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| ShimError::io(context(), e))
    }
}
