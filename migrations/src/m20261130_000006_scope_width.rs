//! Idempotency scopes hold `sub:<token subject>`, and a token's `sub` may be up to 255 bytes
//! (OpenID Connect's bound, checked in `auth.rs`): the column grows from 80 to 300 characters.
//! SQLite does not enforce declared lengths, so only PostgreSQL changes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(
            manager,
            r#"ALTER TABLE "idempotency_keys" ALTER COLUMN "scope" TYPE varchar(300)"#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::on_postgres(
            manager,
            r#"ALTER TABLE "idempotency_keys" ALTER COLUMN "scope" TYPE varchar(80)"#,
        )
        .await
    }
}
