//! Who may administer an org through the API (its usage report, its API keys, its audit log):
//! the org's own admins (`auth.admin_roles`) and operators (`auth.operator_roles`, any org).
//! The rule lives here only, so the endpoints cannot drift apart.
//!
//! Isolation for everyone else is unchanged: an org other than the caller's is 404 (the same
//! answer as an org that does not exist), a member of the org gets 403.

use super::errors::ApiError;
use super::extract::Caller;

/// Lets the caller administer `org`, or says why not; `refusal` is the 403's message for a
/// member of the org.
pub fn administer(caller: &Caller, org: &str, refusal: &str) -> Result<(), ApiError> {
    let who = &caller.identity;
    if who.operator {
        return Ok(());
    }
    if who.org != org {
        return Err(ApiError::not_found("org"));
    }
    if !who.admin {
        return Err(ApiError::forbidden(refusal));
    }
    Ok(())
}
