//! Token extraction and verification: `extract_token` with arbitrary
//! `Authorization`, `Cookie` and query values, then `Verifier::verify` on what
//! it found, and on tokens built from arbitrary header and claims JSON signed
//! with the node's own HS256 secret.
//!
//! Invariants: an extracted token is non-empty and comes from the first
//! source present (Authorization, then the `herald_token` cookie, then the
//! query); an unsigned or wrongly signed token never verifies; a verified
//! token used HS256, is not expired and names a user and a valid org.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use clap::Parser;
use herald_edge::auth::{extract_token, Verifier};
use herald_edge::Config;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzzing-secret-0123456789abcdef";

/// The input's five lines: `Authorization` value (`-` for none), `Cookie`
/// value (`-` for none), `?token=` value (`-` for none), then the JOSE header
/// and the claims of a token signed with [`SECRET`].
struct Input<'a> {
    authorization: Option<&'a [u8]>,
    cookies: Vec<&'a [u8]>,
    query: Option<&'a str>,
    header: &'a [u8],
    claims: &'a [u8],
}

impl<'a> Input<'a> {
    fn parse(data: &'a [u8]) -> Self {
        let mut lines = data.splitn(5, |&b| b == b'\n');
        let mut next = || lines.next().unwrap_or_default();
        let present = |l: &'a [u8]| (l != b"-").then_some(l);
        let authorization = present(next());
        let cookies = present(next()).into_iter().collect();
        let query = present(next()).and_then(|q| std::str::from_utf8(q).ok());
        Self {
            authorization,
            cookies,
            query,
            header: next(),
            claims: next(),
        }
    }
}

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let config = Config::try_parse_from(["herald-edge", "--jwt-secret", SECRET])
            .expect("fuzz config parses");
        Verifier::from_config(&config).expect("verifier from config")
    })
}

fn within(part: &str, whole: &[u8]) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

fuzz_target!(|data: &[u8]| {
    let input = Input::parse(data);
    let mut headers = http::HeaderMap::new();
    let auth = input
        .authorization
        .and_then(|a| http::HeaderValue::from_bytes(a).ok());
    if let Some(v) = auth {
        headers.insert(http::header::AUTHORIZATION, v);
    }
    for c in &input.cookies {
        if let Ok(v) = http::HeaderValue::from_bytes(c) {
            headers.append(http::header::COOKIE, v);
        }
    }
    let found = extract_token(&headers, input.query);
    if let Ok(token) = found {
        assert!(!token.is_empty());
        match headers.get(http::header::AUTHORIZATION) {
            Some(a) => {
                assert!(within(token, a.as_bytes()), "token not from Authorization");
                assert_eq!(token, token.trim());
            }
            None => {
                let from_cookie = headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .any(|c| within(token, c.as_bytes()));
                assert!(from_cookie || Some(token) == input.query);
            }
        }
        // Nothing the fuzzer can write is signed with the secret.
        assert!(verifier().verify(token).is_err(), "unsigned token verified");
    } else if headers.get(http::header::AUTHORIZATION).is_none() {
        assert!(input.query.is_none_or(str::is_empty), "query token ignored");
    }

    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(input.header),
        URL_SAFE_NO_PAD.encode(input.claims)
    );
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256)
        .expect("HMAC signing");
    let token = format!("{signing_input}.{sig}");
    if let Ok(p) = verifier().verify(&token) {
        let header: serde_json::Value =
            serde_json::from_slice(input.header).expect("verified header is JSON");
        assert_eq!(
            header["alg"], "HS256",
            "token of another algorithm verified"
        );
        assert!(!p.user.is_empty());
        assert!(p.org == "*" || herald_proto::subject::check_token("org", &p.org).is_ok());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        assert!(p.exp + 30 >= now, "expired token verified");
        // The same token with its signature altered must fail.
        let mut forged = token.clone().into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).expect("ASCII token");
        assert!(
            verifier().verify(&forged).is_err(),
            "forged signature verified"
        );
    }
});
