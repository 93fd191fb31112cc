//! The API's error type: one status per variant, a JSON body `{"error": "..."}`, and internal
//! failures logged in full but answered with a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::registry;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("range not satisfiable")]
    RangeNotSatisfiable { size: u64 },
    #[error("{0}")]
    Unprocessable(String),
    /// Anything the client cannot fix. The message is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// The registry's errors as HTTP statuses.
impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        match e {
            registry::Error::Invalid(m) => ApiError::BadRequest(m),
            registry::Error::NotFound(m) => ApiError::NotFound(m),
            registry::Error::Exists(m) => ApiError::Conflict(m),
            registry::Error::Rejected(m) => ApiError::Unprocessable(m),
            registry::Error::TooLarge(m) => ApiError::PayloadTooLarge(m),
            registry::Error::Storage(m) => ApiError::Internal(m),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        registry::Error::from(e).into()
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        ApiError::Internal(format!("io: {e}"))
    }
}

impl From<axum::extract::multipart::MultipartError> for ApiError {
    fn from(e: axum::extract::multipart::MultipartError) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge("request body exceeds the server's upload limit".into())
        } else {
            ApiError::Unprocessable(format!("malformed multipart body: {}", e.body_text()))
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            ApiError::Internal(detail) => {
                tracing::error!("{detail}");
                "internal server error".to_string()
            }
            e => e.to_string(),
        };
        let mut resp = (status, Json(serde_json::json!({ "error": message }))).into_response();
        if let ApiError::RangeNotSatisfiable { size } = self {
            resp.headers_mut().insert(
                axum::http::header::CONTENT_RANGE,
                axum::http::HeaderValue::from_str(&format!("bytes */{size}")).expect("ascii"),
            );
        }
        resp
    }
}
