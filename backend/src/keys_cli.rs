//! `backend keys create|list|rotate|revoke --org ORG [--name NAME]`: the same operations as
//! the admin API, for bootstrapping (the first admin key of an org has to come from
//! somewhere) and for operators at a shell. Changes are audited as `cli:<unix user>`.

use clap::Subcommand;
use corral_auth::api_key::Pepper;

use crate::config::Config;
use crate::db::audit::Actor;
use crate::db::keys::{self, KeysError, NewKey};
use crate::db::{self, Pool};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints the secret once. A name already in use is refused: rotate it.
    Create {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        /// A role the key carries, e.g. `admin` to manage the org's keys and models.
        #[arg(long)]
        role: Option<String>,
        /// The user the key acts as (`sub`); default `key:<name>`.
        #[arg(long)]
        owner_user: Option<String>,
        /// RFC 3339 time after which the key is refused.
        #[arg(long)]
        expires_at: Option<String>,
        /// Model patterns narrower than the org's (repeat the flag).
        #[arg(long = "model")]
        models: Vec<String>,
    },
    /// List an org's keys (never their secrets).
    List {
        #[arg(long)]
        org: String,
    },
    /// Give a key a new secret; the old one keeps working for `--grace-s` seconds.
    Rotate {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 86_400)]
        grace_s: i64,
    },
    /// Refuse a key from now on, every secret of it.
    Revoke {
        #[arg(long)]
        org: String,
        #[arg(long)]
        name: String,
    },
}

pub async fn run(config: &Config, command: KeysCommand) -> Result<(), String> {
    let url = config.database_url().map_err(|e| e.to_string())?;
    db::migrate::run(url, &config.database).await?;
    let pool = Pool::new(url, &config.database)?;
    let pepper =
        config.auth.api_key_pepper.as_ref().ok_or(
            "API_KEY_PEPPER is not set: keys are hashed with it (use the gateway's value)",
        )?;
    let actor = Actor {
        who: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        ip: None,
        from_org: None,
    };
    match command {
        KeysCommand::Create {
            org,
            name,
            role,
            owner_user,
            expires_at,
            models,
        } => {
            let expires_at = expires_at
                .map(|t| {
                    chrono::DateTime::parse_from_rfc3339(&t)
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .map_err(|e| format!("--expires-at {t}: {e}"))
                })
                .transpose()?;
            let new = NewKey {
                name,
                role,
                owner_user,
                models: (!models.is_empty()).then_some(models),
                expires_at,
            };
            create(&pool, pepper, &org, &new, &actor).await
        }
        KeysCommand::List { org } => list(&pool, &org).await,
        KeysCommand::Rotate { org, name, grace_s } => {
            let id = id_of(&pool, &org, &name).await?;
            let (minted, until) = keys::rotate(&pool, pepper, &org, &id, grace_s, &actor)
                .await
                .map_err(|e| describe(e, &org, &name))?;
            println!("{}", minted.key);
            eprintln!(
                "rotated key {name} ({id}) of org {org}; the old secret works until {}",
                until.map_or("now (no grace)".into(), |t| t.to_rfc3339())
            );
            Ok(())
        }
        KeysCommand::Revoke { org, name } => {
            let id = id_of(&pool, &org, &name).await?;
            keys::revoke(&pool, &org, &id, &actor)
                .await
                .map_err(|e| describe(e, &org, &name))?;
            eprintln!("revoked key {name} ({id}) of org {org}: refused from now on");
            Ok(())
        }
    }
}

async fn create(
    pool: &Pool,
    pepper: &Pepper,
    org: &str,
    new: &NewKey,
    actor: &Actor,
) -> Result<(), String> {
    let minted = keys::create(pool, pepper, org, new, actor)
        .await
        .map_err(|e| describe(e, org, &new.name))?;
    // The key alone on stdout, so `KEY=$(backend keys create ...)` works; the rest on stderr.
    println!("{}", minted.key);
    eprintln!(
        "created key {} ({}) for org {org}; it is shown this once: store it now",
        new.name, minted.view.id
    );
    Ok(())
}

async fn list(pool: &Pool, org: &str) -> Result<(), String> {
    let rows = keys::list(pool, org, 1000, None)
        .await
        .map_err(|e| describe(e, org, ""))?;
    for k in rows {
        println!(
            "{}\t{}\t{}...{}\t{}\trole={}\tlast_used={}",
            k.id,
            k.name,
            k.prefix,
            k.last_four,
            k.state,
            k.role.as_deref().unwrap_or("-"),
            k.last_used_at.map_or("-".into(), |t| t.to_rfc3339())
        );
    }
    Ok(())
}

async fn id_of(pool: &Pool, org: &str, name: &str) -> Result<String, String> {
    keys::find_by_name(pool, org, name)
        .await
        .map_err(|e| describe(e, org, name))?
        .map(|k| k.id)
        .ok_or_else(|| format!("org {org} has no key named {name}"))
}

fn describe(e: KeysError, org: &str, name: &str) -> String {
    match e {
        KeysError::NameTaken(_) => format!(
            "org {org} already has a key named {name}: use `backend keys rotate --org {org} --name {name}` for a new secret"
        ),
        KeysError::NotFound => format!("org {org} has no active key named {name}"),
        KeysError::Db(e) => e.to_string(),
        KeysError::Random(e) => e,
    }
}
