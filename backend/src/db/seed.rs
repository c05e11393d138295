//! `backend seed`: a default org with an admin user, for a fresh install. Idempotent: every
//! row is inserted only when missing, so running it twice changes nothing.

use super::DbError;

/// What `seed` found and did, for its output.
pub struct Seeded {
    pub org_created: bool,
    pub user_created: bool,
    pub membership_created: bool,
}

pub async fn seed(
    client: &mut tokio_postgres::Client,
    org: &str,
    admin: &str,
) -> Result<Seeded, DbError> {
    let tx = client.transaction().await?;
    let org_created = tx
        .execute(
            "INSERT INTO orgs (id, name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING",
            &[&org],
        )
        .await?
        > 0;
    let user_created = tx
        .execute(
            "INSERT INTO users (id, display_name) VALUES ($1, $1) ON CONFLICT (id) DO NOTHING",
            &[&admin],
        )
        .await?
        > 0;
    let membership_created = tx
        .execute(
            "INSERT INTO memberships (org_id, user_id, role) VALUES ($1, $2, 'admin') \
             ON CONFLICT (org_id, user_id) DO NOTHING",
            &[&org, &admin],
        )
        .await?
        > 0;
    tx.commit().await?;
    Ok(Seeded {
        org_created,
        user_created,
        membership_created,
    })
}
