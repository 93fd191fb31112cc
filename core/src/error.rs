//! One error type for the core crate. Variants name the file and the field or tensor at fault so a
//! user can act on the message without a debugger.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not what it claims to be (bad magic, truncated, inconsistent header).
    #[error("{file}: {msg}")]
    Format { file: String, msg: String },
    /// A named field is missing or has a bad value.
    #[error("{file}: field `{field}`: {msg}")]
    Field { file: String, field: String, msg: String },
    /// A tensor is missing, has the wrong shape or an unsupported type.
    #[error("{file}: tensor `{tensor}`: {msg}")]
    Tensor { file: String, tensor: String, msg: String },
    /// Valid input that this implementation deliberately does not handle.
    #[error("{file}: unsupported: {msg}")]
    Unsupported { file: String, msg: String },
    /// No GPU adapter or device, or a GPU operation (submission, poll, read-back) failed.
    #[error("GPU: {0}")]
    Device(String),
    /// The GPU device was lost (reset, driver crash): the model has to be loaded again.
    #[error("GPU device lost: {0}")]
    DeviceLost(String),
    /// A buffer larger than the device (or this backend's layout) allows.
    #[error("{what} needs {need} bytes, more than the device allows ({limit})")]
    TooLarge { what: String, need: u64, limit: u64 },
    /// More positions than the KV cache was made for.
    #[error("context overflow: {positions} positions exceed the KV cache of {capacity}")]
    ContextOverflow { positions: usize, capacity: usize },
    /// An input whose shape does not fit the operation (no tokens, an id outside the
    /// vocabulary, a row length that is not a multiple of the block size).
    #[error("{op}: {msg}")]
    Shape { op: String, msg: String },
    /// A caller-side mistake (bad argument, inconsistent request).
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Format { file: file.into(), msg: msg.into() }
    }
    pub fn field(file: impl Into<String>, field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Field { file: file.into(), field: field.into(), msg: msg.into() }
    }
    pub fn tensor(file: impl Into<String>, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { file: file.into(), tensor: tensor.into(), msg: msg.into() }
    }
    pub fn unsupported(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Unsupported { file: file.into(), msg: msg.into() }
    }
    pub fn shape(op: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Shape { op: op.into(), msg: msg.into() }
    }
}
