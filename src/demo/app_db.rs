//! The demo app's PostgreSQL mode: when `DATABASE_URL` is set, `/items` lives in the
//! table `items (id bigserial, name text)` instead of memory, and `/` reads from it.
//!
//! It exists so the database gate can be shown and tested end to end: a migration that
//! breaks this release (a constraint its inserts violate, a dropped column) makes its
//! smoke tests fail against the migrated copy. It creates nothing: the schema is the
//! migrations' job.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio_postgres::Client;

/// Connects to `url` (retrying for a few seconds while the server comes up).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let mut last = None;
    for _ in 0..20 {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                return Ok(client);
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    Err(anyhow::anyhow!(
        "cannot connect to {url}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

fn failed(e: tokio_postgres::Error) -> Response {
    let why = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string());
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("database error: {why}\n"),
    )
        .into_response()
}

fn item(id: i64, name: &str) -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "id": id, "name": name }))
}

pub async fn count(db: &Client) -> Result<i64, Response> {
    db.query_one("SELECT count(*) FROM items", &[])
        .await
        .map(|r| r.get(0))
        .map_err(failed)
}

pub async fn create(db: &Client, name: &str) -> Response {
    match db
        .query_one(
            "INSERT INTO items (name) VALUES ($1) RETURNING id",
            &[&name],
        )
        .await
    {
        Ok(row) => (StatusCode::CREATED, item(row.get(0), name)).into_response(),
        Err(e) => failed(e),
    }
}

pub async fn read(db: &Client, id: u64) -> Response {
    match db
        .query_opt("SELECT name FROM items WHERE id = $1", &[&(id as i64)])
        .await
    {
        Ok(Some(row)) => item(id as i64, &row.get::<_, String>(0)).into_response(),
        Ok(None) => super::app::not_found(id),
        Err(e) => failed(e),
    }
}

pub async fn update(db: &Client, id: u64, name: &str) -> Response {
    match db
        .execute(
            "UPDATE items SET name = $2 WHERE id = $1",
            &[&(id as i64), &name],
        )
        .await
    {
        Ok(1) => item(id as i64, name).into_response(),
        Ok(_) => super::app::not_found(id),
        Err(e) => failed(e),
    }
}

pub async fn delete(db: &Client, id: u64) -> Response {
    match db
        .execute("DELETE FROM items WHERE id = $1", &[&(id as i64)])
        .await
    {
        Ok(1) => StatusCode::NO_CONTENT.into_response(),
        Ok(_) => super::app::not_found(id),
        Err(e) => failed(e),
    }
}
