//! vicugna-server: the adapter registry (axum, sqlx, object_store) that serves base models,
//! adapters and the web app.
//!
//! Not implemented yet — it is its own issue ("Adapter registry server"). This crate deliberately
//! exports nothing until then; `make run` chats in the terminal with the bundled model instead.
