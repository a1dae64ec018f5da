//! Connection strings made safe to log: the password of a URL's userinfo, of its query and of a
//! libpq `key=value` string becomes `***`, including in strings the URL parser refuses.

/// A connection string with its password replaced by `***`, safe to log.
///
/// Handles URLs (`scheme://user:pass@host/...`, `?password=`) and libpq key/value strings
/// (`host=... password=...`).
pub fn redact_url(raw: &str) -> String {
    // A parse is trusted only if it accounts for the `@`: a password with an unescaped `/`,
    // `?`, `#` or `@` makes the parser end the userinfo or the authority early and take the
    // rest of the password for a host or a path. With exactly one `@` that the parser took as
    // the end of a userinfo, everything before it is that userinfo.
    let ats = raw
        .split_once("://")
        .map_or(0, |(_, rest)| rest.matches('@').count());
    let parsed = url::Url::parse(raw).ok().filter(|url| {
        ats == 0 || (ats == 1 && (!url.username().is_empty() || url.password().is_some()))
    });
    if let Some(mut url) = parsed {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let sensitive = is_password_key(&k);
                (
                    k.into_owned(),
                    if sensitive {
                        "***".into()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        if !pairs.is_empty() {
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return url.to_string();
    }
    // Looks like a URL but does not parse (libpq multi-host `h1:1,h2:2`, a bad port, a
    // password with a `/` or `#`, …): the userinfo cannot be told apart reliably, so
    // everything between `://` and the last `@` goes.
    if let Some((scheme, rest)) = raw.split_once("://") {
        // The query's password parameters first (a value may hold an `@`), then the userinfo.
        let rest = redact_password_params(rest);
        let rest = match rest.rfind('@') {
            Some(at) => format!("***@{}", &rest[at + 1..]),
            None => rest,
        };
        return format!("{scheme}://{rest}");
    }
    // libpq key=value form; redact anything that looks like a password value.
    raw.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((k, _)) if is_password_key(k) => format!("{k}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A URL query parameter that carries a password (`password`, `sslpassword`, `pass`, any case).
fn is_password_key(key: &str) -> bool {
    ["password", "sslpassword", "pass"]
        .iter()
        .any(|k| key.eq_ignore_ascii_case(k))
}

/// `…?a=1&password=x&b=2` → `…?a=1&password=***&b=2`: the value of every `password`,
/// `sslpassword` or `pass` parameter (any case), up to the next `&` or the end.
fn redact_password_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let Some(at) = rest.find(['?', '&']) else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..=at]);
        rest = &rest[at + 1..];
        let key_end = rest.find(['=', '&']).unwrap_or(rest.len());
        let key = &rest[..key_end];
        if is_password_key(key) && rest[key_end..].starts_with('=') {
            out.push_str(key);
            out.push_str("=***");
            rest = &rest[key_end + 1..];
            rest = &rest[rest.find('&').unwrap_or(rest.len())..];
        }
    }
}

#[cfg(test)]
mod redaction_properties {
    use super::redact_url;
    use proptest::prelude::*;

    fn host_part() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{1,8}(\\.[a-z]{2,5})?".prop_map(|h| h),
            "[a-z]{1,8}:[0-9]{1,5}".prop_map(|h| h),
            // libpq multi-host, which the URL parser refuses.
            "[a-z]{1,6}:[0-9]{1,4},[a-z]{1,6}:[0-9]{1,4}".prop_map(|h| h),
            // A port that is not a number.
            "[a-z]{1,8}:[a-z]{1,4}".prop_map(|h| h),
            Just("[::1]:5432".to_owned()),
        ]
    }

    proptest! {
        /// Whatever the URL looks like, its password never survives redaction.
        #[test]
        fn the_password_never_survives(
            scheme in prop_oneof![Just("postgres"), Just("postgresql"), Just("amqp"), Just("amqps")],
            user in "[a-z]{1,8}",
            password in "[A-Za-z0-9!$%&*+=~@:/?#.-]{6,24}",
            host in host_part(),
            path in "(/[a-z0-9%]{0,8})?",
        ) {
            // A password that is part of the rest of the URL cannot be told apart from it.
            prop_assume!(![user.as_str(), host.as_str(), path.as_str(), scheme].iter().any(|p| p.contains(password.as_str())));
            let url = format!("{scheme}://{user}:{password}@{host}{path}");
            let shown = redact_url(&url);
            prop_assert!(!shown.contains(&password), "{url} -> {shown}");
            let query = format!("{scheme}://{host}{path}?password={}", password.replace(['&', '#', '?'], "x"));
            let shown = redact_url(&query);
            prop_assert!(!shown.contains(&password.replace(['&', '#', '?'], "x")), "{query} -> {shown}");
        }
    }

    #[test]
    fn urls_that_do_not_parse_lose_their_userinfo() {
        assert_eq!(
            redact_url("postgres://u:pw@h1:1,h2:2/db"),
            "postgres://***@h1:1,h2:2/db"
        );
        assert_eq!(redact_url("amqp://u:pw@h:abc/"), "amqp://***@h:abc/");
        assert_eq!(redact_url("amqp://h:abc/"), "amqp://h:abc/");
        // Unescaped `/`, `#`, `@` in a password (found by the property test): the parser
        // would end the userinfo early.
        assert_eq!(redact_url("postgres://a:/A#a#A@h"), "postgres://***@h");
        assert_eq!(redact_url("postgres://a:@$#!#-@h"), "postgres://***@h");
        assert_eq!(
            redact_url("postgres://h?PassWord=@pw&x=1"),
            "postgres://h?PassWord=***&x=1"
        );
        // libpq's key=value form: the client key's passphrase too.
        assert_eq!(
            redact_url("host=db password=pw sslpassword=keypass user=u"),
            "host=db password=*** sslpassword=*** user=u"
        );
        // The usual form keeps its user name.
        assert_eq!(
            redact_url("postgres://buyonce:s3cret@db:5432/buyonce?sslmode=verify-full"),
            "postgres://buyonce:***@db:5432/buyonce?sslmode=verify-full"
        );
    }

    #[test]
    fn redacts_passwords_in_every_form() {
        assert_eq!(
            redact_url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/buyonce?sslmode=require"),
            "postgres://app:***@db:5432/buyonce?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/x?user=a&password=s3cret"),
            "postgres://db/x?user=a&password=***"
        );
        assert_eq!(
            redact_url("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/buyonce"),
            "postgres://postgres@127.0.0.1:5432/buyonce"
        );
    }
}
