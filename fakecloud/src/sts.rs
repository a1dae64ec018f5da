//! STS (awsQuery): `GetCallerIdentity` and `AssumeRole`, which is how fakecloud emulates
//! multi-account: credentials from `AssumeRole` on `arn:aws:iam::<acct>:role/<name>` are
//! recognised afterwards (signature verified with the issued secret) and attributed to `<acct>`.

use axum::response::Response;
use chrono::TimeDelta;

use super::aws::Call;
use super::identity::role_id;
use super::protocol::{iso_time, query_success, unknown_query_operation, ApiError, AwsService};

/// Dispatches one STS call.
pub fn handle(call: &Call<'_>) -> Result<Response, ApiError> {
    match call.operation {
        "GetCallerIdentity" => Ok(query_success(
            AwsService::Sts,
            call.operation,
            call.request_id,
            |w| {
                w.leaf("Arn", &call.identity.arn);
                w.leaf("UserId", &call.identity.user_id);
                w.leaf("Account", &call.identity.account);
            },
        )),
        "AssumeRole" => assume_role(call),
        other => Err(unknown_query_operation(other)),
    }
}

fn validation(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("ValidationError", message)
}

/// `arn:aws:iam::<12 digits>:role/<path/>name` → (account, name).
fn parse_role_arn(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:aws:iam::")?;
    let (account, resource) = rest.split_once(':')?;
    let role = resource.strip_prefix("role/")?;
    let name = role.rsplit('/').next()?;
    let valid_account = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    (valid_account && !name.is_empty()).then_some((account, name))
}

fn assume_role(call: &Call<'_>) -> Result<Response, ApiError> {
    let p = call.params;
    let arn = p.get("RoleArn").ok_or_else(|| {
        validation("1 validation error detected: Value null at 'roleArn' failed to satisfy constraint: Member must not be null")
    })?;
    let (account, role) =
        parse_role_arn(arn).ok_or_else(|| validation(format!("{arn} is invalid")))?;
    let session = p.get("RoleSessionName").unwrap_or_default();
    let session_ok = (2..=64).contains(&session.len())
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c));
    if !session_ok {
        return Err(validation(format!(
            "1 validation error detected: Value '{session}' at 'roleSessionName' failed to satisfy constraint: \
             Member must have length between 2 and 64 and match [\\w+=,.@-]*"
        )));
    }
    let default_seconds = call.shared.config.token_lifetime.as_secs() as i64;
    let seconds = p
        .int("DurationSeconds", validation)?
        .unwrap_or(default_seconds.clamp(900, 43_200));
    if !(900..=43_200).contains(&seconds) {
        return Err(validation(format!(
            "1 validation error detected: Value '{seconds}' at 'durationSeconds' failed to satisfy constraint: \
             Member must have value between 900 and 43200"
        )));
    }
    let nonce = call.shared.store().number(u64::MAX);
    let creds = call.shared.identities.assume_role(
        account,
        role,
        session,
        TimeDelta::seconds(seconds),
        nonce,
        call.now,
    );
    tracing::info!(role.arn = %arn, by = %call.identity.arn, "role assumed");
    Ok(query_success(
        AwsService::Sts,
        call.operation,
        call.request_id,
        |w| {
            w.elem("Credentials", |w| {
                w.leaf("AccessKeyId", &creds.access_key_id);
                w.leaf("SecretAccessKey", &creds.secret_access_key);
                w.leaf("SessionToken", &creds.session_token);
                w.leaf("Expiration", iso_time(creds.expiration));
            });
            w.elem("AssumedRoleUser", |w| {
                w.leaf(
                    "AssumedRoleId",
                    format!("{}:{session}", role_id(account, role)),
                );
                w.leaf(
                    "Arn",
                    format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
                );
            });
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::parse_role_arn;

    #[test]
    fn role_arns() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::111122223333:role/buyer"),
            Some(("111122223333", "buyer"))
        );
        assert_eq!(
            parse_role_arn("arn:aws:iam::111122223333:role/path/to/buyer"),
            Some(("111122223333", "buyer"))
        );
        assert_eq!(parse_role_arn("arn:aws:iam::1111:role/buyer"), None);
        assert_eq!(parse_role_arn("arn:aws:iam::111122223333:user/bob"), None);
    }
}
