//! The admin JSON API (`/admin/api/...`) the console and operators' scripts read: the same
//! credentials as every route (a JWT or an API key), and two audiences. An operator (a role in
//! `console.operator_roles`) sees the pool, every org and the policy; an org admin (a role in
//! the org's policy `admin_roles`) sees only their own org, and another org's data is a 404,
//! as in the backend. Anyone else is refused.

use pingora_proxy::Session;
use serde_json::{json, Value};

use super::{orgs_view, policy_view, pool_view};
use crate::context::{Identity, RequestCtx};
use crate::errors::{write_json, GatewayError};
use crate::state::AppState;

pub const PREFIX: &str = "/admin/api/";

/// Who is asking, and what they may see.
pub struct Caller {
    pub id: Identity,
    pub operator: bool,
    pub org_admin: bool,
}

impl Caller {
    /// Operators see every org; an org admin only their own.
    pub fn sees(&self, org: &str) -> bool {
        self.operator || (self.org_admin && self.id.org == org)
    }

    fn require_operator(&self) -> Result<(), GatewayError> {
        match self.operator {
            true => Ok(()),
            false => Err(GatewayError::forbidden(
                "this needs an operator: an org admin sees only their org (/admin/api/orgs)",
            )),
        }
    }
}

/// Answers an admin API path; `Ok(false)` when the path is not one.
pub async fn handle(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> pingora_error::Result<bool> {
    // Every request passes here: look before copying the path.
    let Some(rest) = session.req_header().uri.path().strip_prefix(PREFIX) else {
        return Ok(false);
    };
    let rest = rest.to_string();
    match answer(session, ctx, state, &rest).await {
        Ok(body) => {
            write_json(session, 200, &body, &super::own_headers(ctx)).await?;
            ctx.answered = Some(200);
            Ok(true)
        }
        Err(e) => crate::proxy::respond_error(session, ctx, &e).await,
    }
}

async fn answer(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
    rest: &str,
) -> Result<Value, GatewayError> {
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        return Err(
            GatewayError::new(405, "method_not_allowed", "the admin API only answers GET")
                .with_header("Allow", "GET, HEAD"),
        );
    }
    let caller = caller(session, ctx, state).await?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["me"] => Ok(me(&caller)),
        ["pool"] => {
            caller.require_operator()?;
            Ok(pool_view::render(state))
        }
        ["orgs"] => Ok(orgs_view::list(state, &caller).await),
        ["orgs", org] => {
            let org = percent_encoding::percent_decode_str(org).decode_utf8_lossy();
            orgs_view::one(state, &caller, &org).await
        }
        ["policy"] => {
            caller.require_operator()?;
            Ok(policy_view::render(state))
        }
        _ => Err(GatewayError::not_found(format!(
            "{PREFIX}{rest} is not an admin API path (me, pool, orgs, orgs/{{org}}, policy)"
        ))),
    }
}

/// The verified caller, if they may use the admin API at all.
async fn caller(
    session: &Session,
    ctx: &RequestCtx,
    state: &AppState,
) -> Result<Caller, GatewayError> {
    let Some(auth) = &state.auth else {
        return Err(GatewayError::forbidden(
            "the admin API needs authentication: set JWT_SECRET, JWT_PUBLIC_KEY_FILE, JWKS_URL or API_KEY_PEPPER",
        ));
    };
    let id = auth.identify(session, ctx).await?;
    let operator = id
        .roles
        .iter()
        .any(|r| state.config.console.operator_roles.contains(r));
    let policy = ctx
        .policy
        .clone()
        .unwrap_or_else(|| state.policies.current());
    let admin_roles = &policy.org(&id.org).admin_roles;
    let org_admin = id.roles.iter().any(|r| admin_roles.contains(r));
    if !operator && !org_admin {
        return Err(GatewayError::forbidden(format!(
            "the console is for operators and org admins: this credential is a member of org \"{}\"",
            id.org
        )));
    }
    Ok(Caller {
        id,
        operator,
        org_admin,
    })
}

fn me(c: &Caller) -> Value {
    json!({
        "org": c.id.org,
        "user": c.id.user,
        "roles": c.id.roles,
        "operator": c.operator,
        "org_admin": c.org_admin,
        "key": c.id.key.as_ref().map(|k| json!({"id": k.id, "name": k.name})),
    })
}
