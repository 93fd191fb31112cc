//! Bearer tokens: 256 random bits shown once, stored as their SHA-256, with a scope and revocation.

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::error::{ApiError, ApiResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Publish adapters and delete one's own versions.
    Publish,
    /// Everything, including registering base models and deleting any version.
    Admin,
}

impl Scope {
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "publish" => Some(Scope::Publish),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Publish => "publish",
            Scope::Admin => "admin",
        }
    }
}

/// Who made a request: the token's name and scope.
#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new token: `vcg_` and 64 hex digits.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("vcg_{}", hex::encode(bytes))
}

/// Create a token named `name` and return it (the only time it is visible).
pub async fn create_token(db: &Db, name: &str, scope: Scope) -> ApiResult<String> {
    crate::validate::check_name(name, "token name")?;
    let token = new_token();
    db.insert_token(name, &hash_token(&token), scope.as_str()).await?;
    Ok(token)
}

/// The caller, if the request carries a live token with at least `need`: 401 without a valid token,
/// 403 with one that lacks the scope.
pub async fn require(db: &Db, headers: &HeaderMap, need: Scope) -> ApiResult<Caller> {
    let unauthorized = || ApiError::Unauthorized("a valid `Authorization: Bearer TOKEN` header is required".into());
    let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(unauthorized)?;
    let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).ok_or_else(unauthorized)?;
    if token.is_empty() || token.len() > 200 {
        return Err(unauthorized());
    }
    let (name, scope) = db.token_by_hash(&hash_token(token)).await?.ok_or_else(unauthorized)?;
    let scope = Scope::parse(&scope).ok_or_else(|| ApiError::Internal(format!("token {name} has scope {scope}")))?;
    if scope < need {
        return Err(ApiError::Forbidden(format!(
            "this token's scope is `{}`; `{}` is required",
            scope.as_str(),
            need.as_str()
        )));
    }
    Ok(Caller { name, scope })
}
