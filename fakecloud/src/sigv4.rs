//! AWS Signature Version 4 verification of the `Authorization` header.
//!
//! fakecloud checks the signature the way AWS does (and the way `aws-sigv4` computes it), so a
//! client configured with the wrong secret fails here exactly as it would against the cloud,
//! instead of silently passing in tests. The credential scope also gives us the region and the
//! signing name of the service.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How far the request clock may drift from ours; AWS allows 15 minutes.
const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The parts of `Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// Access key ID.
    pub access_key: String,
    /// `yyyymmdd` date of the credential scope.
    pub date: String,
    /// Region of the credential scope.
    pub region: String,
    /// Signing name of the credential scope (`ec2`, `rds`, `es`, …).
    pub service: String,
    /// Lowercase header names, in the order given.
    pub signed_headers: Vec<String>,
    /// Hex signature.
    pub signature: String,
}

/// The parts of a request that SigV4 covers.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// Raw (still percent-encoded) path.
    pub path: &'a str,
    /// Raw query string.
    pub query: Option<&'a str>,
    /// Headers as received.
    pub headers: &'a HeaderMap,
    /// Body as received.
    pub body: &'a [u8],
}

/// Why a request is not properly signed. The caller maps it to the protocol's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigV4Error {
    /// No `Authorization` header at all.
    #[error("Request is missing Authentication Token")]
    Missing,
    /// The header does not parse.
    #[error("Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters: {0}")]
    Malformed(String),
    /// The signature does not match the one we compute.
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
    /// The request time is too far from ours.
    #[error("Signature expired: {0} is now earlier than the allowed window (15 minutes)")]
    Expired(String),
}

impl Authorization {
    /// Parses the header value.
    pub fn parse(value: &str) -> Result<Self, SigV4Error> {
        let rest = value
            .strip_prefix("AWS4-HMAC-SHA256")
            .ok_or_else(|| SigV4Error::Malformed("unsupported algorithm".into()))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            }
        }
        let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature)
        else {
            return Err(SigV4Error::Malformed(value.to_string()));
        };
        let scope: Vec<&str> = credential.split('/').collect();
        let [access_key, date, region, service, "aws4_request"] = scope.as_slice() else {
            return Err(SigV4Error::Malformed(format!(
                "bad credential scope '{credential}'"
            )));
        };
        Ok(Self {
            access_key: access_key.to_string(),
            date: date.to_string(),
            region: region.to_string(),
            service: service.to_string(),
            signed_headers: signed.split(';').map(str::to_ascii_lowercase).collect(),
            signature: signature.to_ascii_lowercase(),
        })
    }

    /// Checks the signature of `request` against `secret`.
    pub fn verify(
        &self,
        secret: &str,
        request: &SignedRequest<'_>,
        now: DateTime<Utc>,
    ) -> Result<(), SigV4Error> {
        let amz_date = header_value(request.headers, "x-amz-date")
            .ok_or_else(|| SigV4Error::Malformed("missing X-Amz-Date".into()))?;
        let request_time = NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
            .map_err(|_| SigV4Error::Malformed(format!("bad X-Amz-Date '{amz_date}'")))?
            .and_utc();
        if (now - request_time).abs() > MAX_CLOCK_SKEW {
            return Err(SigV4Error::Expired(amz_date));
        }
        if !amz_date.starts_with(&self.date) {
            return Err(SigV4Error::Mismatch);
        }
        let canonical = canonical_request(request, &self.signed_headers)?;
        let scope = format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        );
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex::encode(Sha256::digest(canonical.as_bytes()))
        );
        let key = signing_key(secret, &self.date, &self.region, &self.service);
        let expected = hex::encode(hmac(&key, string_to_sign.as_bytes()));
        if expected.as_bytes().ct_eq(self.signature.as_bytes()).into() {
            Ok(())
        } else {
            Err(SigV4Error::Mismatch)
        }
    }
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// AWS URI encoding: everything but the unreserved characters, optionally keeping `/`.
fn uri_encode(input: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for b in input.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Collapses runs of spaces and trims, as SigV4 canonical header values require.
fn trim_all(value: &str) -> String {
    value
        .split(' ')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn canonical_request(
    request: &SignedRequest<'_>,
    signed_headers: &[String],
) -> Result<String, SigV4Error> {
    // Non-S3 services sign the already-encoded path encoded once more ("double encoding").
    let SignedRequest {
        method,
        path,
        query,
        headers,
        body,
    } = *request;
    let path = if path.is_empty() { "/" } else { path };
    let canonical_path = uri_encode(path, true);

    let mut params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false)))
            .collect();
    params.sort();
    let canonical_query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");

    let mut canonical_headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| trim_all(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() {
            return Err(SigV4Error::Mismatch);
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }

    let body_hash = hex::encode(Sha256::digest(body));
    let payload_hash = match headers
        .get("x-amz-content-sha256")
        .and_then(|v| v.to_str().ok())
    {
        Some("UNSIGNED-PAYLOAD") => "UNSIGNED-PAYLOAD".to_string(),
        Some(claimed) if claimed.eq_ignore_ascii_case(&body_hash) => body_hash,
        Some(_) => return Err(SigV4Error::Mismatch),
        None => body_hash,
    };
    Ok(format!(
        "{method}\n{canonical_path}\n{canonical_query}\n{canonical_headers}\n{}\n{payload_hash}",
        signed_headers.join(";")
    ))
}

/// Signs a request the way a client would. Used by fakecloud's own tests of this module.
#[cfg(test)]
fn sign(secret: &str, auth: &Authorization, amz_date: &str, canonical: &str) -> String {
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let sts = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    hex::encode(hmac(
        &signing_key(secret, &auth.date, &auth.region, &auth.service),
        sts.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(path: &'a str, query: Option<&'a str>, headers: &'a HeaderMap) -> SignedRequest<'a> {
        SignedRequest {
            method: "GET",
            path,
            query,
            headers,
            body: b"",
        }
    }

    /// The "get-vanilla" vector of the AWS SigV4 test suite.
    #[test]
    fn matches_the_aws_test_suite_vector() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let auth = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        )
        .unwrap();
        let now = NaiveDateTime::parse_from_str("20150830T123600Z", "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        let request = get("/", None, &headers);
        auth.verify(secret, &request, now).unwrap();
        assert_eq!(
            auth.verify("wrong", &request, now),
            Err(SigV4Error::Mismatch)
        );
        let later = now + chrono::TimeDelta::hours(1);
        assert!(matches!(
            auth.verify(secret, &request, later),
            Err(SigV4Error::Expired(_))
        ));
    }

    #[test]
    fn query_and_path_are_canonicalised() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "h".parse().unwrap());
        headers.insert("x-amz-date", "20150830T123600Z".parse().unwrap());
        let signed = vec!["host".to_string(), "x-amz-date".to_string()];
        let request = get("/a%20b", Some("b=2&a=1+1"), &headers);
        let c = canonical_request(&request, &signed).unwrap();
        assert!(c.starts_with("GET\n/a%2520b\na=1%201&b=2\n"), "{c}");
        let mut auth = Authorization::parse(
            "AWS4-HMAC-SHA256 Credential=AK/20150830/us-east-1/es/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        )
        .unwrap();
        auth.signature = sign("s", &auth, "20150830T123600Z", &c);
        let now = NaiveDateTime::parse_from_str("20150830T123600Z", "%Y%m%dT%H%M%SZ")
            .unwrap()
            .and_utc();
        auth.verify("s", &request, now).unwrap();
    }

    #[test]
    fn malformed_headers_are_rejected() {
        assert!(matches!(
            Authorization::parse("Bearer x"),
            Err(SigV4Error::Malformed(_))
        ));
        assert!(matches!(
            Authorization::parse(
                "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=1"
            ),
            Err(SigV4Error::Malformed(_))
        ));
    }
}
