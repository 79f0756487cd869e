//! The database a bench run uses: a fresh SQLite file in a temp dir (default), a SQLite URL as
//! given, or a fresh `allot_bench_<uuid>` database on a PostgreSQL server (dropped at the end).

use std::path::PathBuf;

use anyhow::Context;
use sea_orm::{ConnectionTrait, Database};

use crate::server::redact_url;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

impl Kind {
    pub fn of(url: &str) -> anyhow::Result<Kind> {
        if url.starts_with("sqlite:") {
            Ok(Kind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Kind::Postgres)
        } else {
            anyhow::bail!(
                "unsupported database URL {}: use sqlite://… or postgres://…",
                redact_url(url)
            )
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

/// A database for one run, and what to remove afterwards.
pub struct BenchDatabase {
    pub url: String,
    pub kind: Kind,
    /// How it is described in the report.
    pub description: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Nothing,
    RemoveDir(PathBuf),
    DropDatabase { admin_url: String, name: String },
}

impl BenchDatabase {
    /// `None`: a fresh SQLite file in a new temp dir. A postgres URL: a fresh database on that
    /// server. A SQLite URL: that file (created if missing when the URL says `mode=rwc`).
    pub async fn prepare(url: Option<&str>) -> anyhow::Result<BenchDatabase> {
        let Some(url) = url else {
            let dir =
                std::env::temp_dir().join(format!("allot-bench-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join("allot.db");
            return Ok(BenchDatabase {
                url: format!("sqlite://{}?mode=rwc", path.display()),
                kind: Kind::Sqlite,
                description: format!("SQLite, fresh file {}", path.display()),
                cleanup: Cleanup::RemoveDir(dir),
            });
        };
        match Kind::of(url)? {
            Kind::Sqlite => Ok(BenchDatabase {
                url: url.to_string(),
                kind: Kind::Sqlite,
                description: format!("SQLite, {url}"),
                cleanup: Cleanup::Nothing,
            }),
            Kind::Postgres => {
                let name = format!("allot_bench_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
                let created = admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("cannot create database {name}"));
                admin.close().await.ok();
                created?;
                let fresh = replace_database(url, &name);
                let tls = connection_tls(&fresh).await?;
                Ok(BenchDatabase {
                    description: format!(
                        "PostgreSQL, fresh database {}, {}",
                        redact_url(&fresh),
                        match &tls {
                            Some(version) => format!("over TLS ({version})"),
                            None => "plaintext (no TLS)".to_string(),
                        }
                    ),
                    url: fresh,
                    kind: Kind::Postgres,
                    cleanup: Cleanup::DropDatabase {
                        admin_url: url.to_string(),
                        name,
                    },
                })
            }
        }
    }

    /// For `--history`: on PostgreSQL the database `allot_history` on that server (created
    /// if missing, kept afterwards, so a later run measures on the same history); otherwise
    /// as [`BenchDatabase::prepare`].
    pub async fn prepare_kept(url: Option<&str>) -> anyhow::Result<BenchDatabase> {
        let Some(url) = url.filter(|u| Kind::of(u).ok() == Some(Kind::Postgres)) else {
            return Self::prepare(url).await;
        };
        const NAME: &str = "allot_history";
        let admin = Database::connect(url)
            .await
            .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
        let exists = admin
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Postgres,
                format!("SELECT 1 AS one FROM pg_database WHERE datname = '{NAME}'"),
            ))
            .await?
            .is_some();
        if !exists {
            admin
                .execute_unprepared(&format!("CREATE DATABASE {NAME}"))
                .await
                .with_context(|| format!("cannot create database {NAME}"))?;
        }
        admin.close().await.ok();
        let kept = replace_database(url, NAME);
        Ok(BenchDatabase {
            description: format!("PostgreSQL, database {} (kept)", redact_url(&kept)),
            url: kept,
            kind: Kind::Postgres,
            cleanup: Cleanup::Nothing,
        })
    }

    /// Removes what `prepare` created (the temp dir, or the fresh database).
    pub async fn cleanup(self) -> anyhow::Result<()> {
        match self.cleanup {
            Cleanup::Nothing => Ok(()),
            Cleanup::RemoveDir(dir) => std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display())),
            Cleanup::DropDatabase { admin_url, name } => {
                let admin = Database::connect(&admin_url)
                    .await
                    .with_context(|| format!("cannot connect to {}", redact_url(&admin_url)))?;
                let dropped = admin
                    .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .with_context(|| format!("cannot drop database {name}"));
                admin.close().await.ok();
                dropped.map(|_| ())
            }
        }
    }
}

/// The TLS version a connection to `url` negotiates (as the server reports it), or `None`
/// for a plaintext connection.
async fn connection_tls(url: &str) -> anyhow::Result<Option<String>> {
    let conn = Database::connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT version FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl",
        ))
        .await;
    conn.close().await.ok();
    Ok(match row? {
        Some(row) => Some(row.try_get::<String>("", "version")?),
        None => None,
    })
}

/// Replaces the database name in a postgres URL, keeping everything else (user, password,
/// host, port, `?query`).
pub fn replace_database(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{name}"));
            parsed.to_string()
        }
        // Not a URL the driver would take either: leave it for the connect to refuse.
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/test", "b"),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            replace_database("postgres://u:p@h/test?sslmode=disable", "b"),
            "postgres://u:p@h/b?sslmode=disable"
        );
        assert_eq!(
            replace_database("postgres://h:5432", "b"),
            "postgres://h:5432/b"
        );
    }
}
