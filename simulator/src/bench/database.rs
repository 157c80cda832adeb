//! A fresh database for each run of the csms server: a SQLite file in a
//! temporary directory (the server's defaults: WAL, `synchronous=FULL`), or
//! a PostgreSQL database created for the run from an admin URL and dropped
//! after it, so no run measures leftovers of another.

use anyhow::Context;
use sqlx::Connection;

pub enum Database {
    Sqlite {
        url: String,
        _dir: tempfile::TempDir,
    },
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
}

impl Database {
    /// SQLite unless `postgres_admin_url` is given.
    pub async fn fresh(postgres_admin_url: Option<&str>) -> anyhow::Result<Database> {
        let Some(admin_url) = postgres_admin_url else {
            let dir = tempfile::Builder::new()
                .prefix("csms-bench-")
                .tempdir()
                .context("creating a temporary directory for the SQLite database")?;
            let url = format!("sqlite://{}", dir.path().join("csms.db").display());
            return Ok(Database::Sqlite { url, _dir: dir });
        };
        let name = format!("csms_bench_{:016x}", rand::random::<u64>());
        let mut admin = sqlx::PgConnection::connect(admin_url)
            .await
            .context("connecting to PostgreSQL with the --postgres URL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        let _ = admin.close().await;
        Ok(Database::Postgres {
            url: database_url(admin_url, &name)?,
            admin_url: admin_url.to_string(),
            name,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            Database::Sqlite { url, .. } | Database::Postgres { url, .. } => url,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Database::Sqlite { .. } => "sqlite",
            Database::Postgres { .. } => "postgres",
        }
    }

    /// Removes the database (the SQLite directory goes with the value).
    pub async fn remove(self) -> anyhow::Result<()> {
        if let Database::Postgres {
            admin_url, name, ..
        } = self
        {
            let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut admin)
                .await
                .with_context(|| format!("dropping database {name}"))?;
            let _ = admin.close().await;
        }
        Ok(())
    }
}

/// The admin URL with its database name replaced (query parameters kept).
fn database_url(admin_url: &str, name: &str) -> anyhow::Result<String> {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (admin_url, None),
    };
    let rest = base
        .split_once("://")
        .map(|(_, rest)| rest)
        .context("the PostgreSQL URL has no scheme")?;
    let server = match rest.find('/') {
        Some(slash) => &base[..base.len() - rest.len() + slash],
        None => base,
    };
    Ok(match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_database_replaces_the_admin_database() {
        assert_eq!(
            database_url("postgres://u@h:5432/postgres", "b").unwrap(),
            "postgres://u@h:5432/b"
        );
        assert_eq!(
            database_url("postgres://u:p@h/admin?sslmode=disable", "b").unwrap(),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h", "b").unwrap(), "postgres://h/b");
        assert!(database_url("nonsense", "b").is_err());
    }
}
