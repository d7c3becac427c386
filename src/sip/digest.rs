//! SIP HTTP-digest client authentication (RFC 3261 §22, RFC 2617, RFC 7616).
//!
//! Our own because rsip rejects `qop="auth,auth-int"` and `algorithm=SHA-256`, which real
//! servers send. Pure: the caller supplies cnonce and nonce count, so answers are testable.

use md5::{Digest, Md5};
use sha2::Sha256;
use std::fmt;

/// Digest algorithms of RFC 7616 / RFC 3261.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// Plain MD5; the default when a challenge names no algorithm.
    Md5,
    /// MD5 with the session HA1 of RFC 2617 §3.2.2.2.
    Md5Sess,
    /// SHA-256 (RFC 7616); preferred when offered.
    Sha256,
    /// SHA-256 with the session HA1.
    Sha256Sess,
}

impl Algorithm {
    fn is_sha256(self) -> bool {
        matches!(self, Algorithm::Sha256 | Algorithm::Sha256Sess)
    }

    fn is_sess(self) -> bool {
        matches!(self, Algorithm::Md5Sess | Algorithm::Sha256Sess)
    }

    fn hash(self, data: &str) -> String {
        if self.is_sha256() {
            hex(&Sha256::digest(data.as_bytes()))
        } else {
            hex(&Md5::digest(data.as_bytes()))
        }
    }
}

/// One table for both parsing and printing, so the two cannot drift apart.
const ALGORITHMS: [(Algorithm, &str); 4] = [
    (Algorithm::Md5, "MD5"),
    (Algorithm::Md5Sess, "MD5-sess"),
    (Algorithm::Sha256, "SHA-256"),
    (Algorithm::Sha256Sess, "SHA-256-sess"),
];

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = ALGORITHMS.iter().find(|a| a.0 == *self).map_or("", |a| a.1);
        f.write_str(name)
    }
}

/// Why a challenge cannot be answered; lets callers tell "not for us" from "broken".
#[derive(thiserror::Error, Debug, PartialEq)]
pub enum DigestError {
    /// The scheme is not `Digest` (e.g. `Basic`), or the value is empty.
    #[error("not a Digest challenge")]
    NotDigest,
    /// A parameter without which no response can be computed is absent.
    #[error("missing digest parameter `{0}`")]
    MissingParam(&'static str),
    /// The server asked for a hash we do not implement (e.g. SHA-512-256).
    #[error("unsupported digest algorithm `{0}`")]
    UnsupportedAlgorithm(String),
    /// The server offered only qop values we cannot honour (auth-int needs body hashing).
    #[error("unsupported qop `{0}`")]
    UnsupportedQop(String),
    /// The value does not follow the auth-param grammar.
    #[error("malformed digest challenge: {0}")]
    Malformed(String),
}

/// A parsed WWW-Authenticate / Proxy-Authenticate digest challenge.
#[derive(Clone, Debug, PartialEq)]
pub struct Challenge {
    /// Protection space; echoed back and part of HA1.
    pub realm: String,
    /// Server nonce; echoed back and part of the response hash.
    pub nonce: String,
    /// Opaque server state that must be returned verbatim when present.
    pub opaque: Option<String>,
    /// Hash to use; MD5 when the server named none.
    pub algorithm: Algorithm,
    /// True if the server's qop list contains "auth", which switches on cnonce/nc.
    pub qop_auth: bool,
    /// True if the previous credentials were fine and only the nonce expired,
    /// so the caller may retry without asking for a new password.
    pub stale: bool,
}

impl Challenge {
    /// Parses one header value like `Digest realm="x", nonce="y", qop="auth,auth-int", algorithm=SHA-256, stale=TRUE`.
    ///
    /// One value holds one challenge; SIP servers send separate headers for alternatives.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let value = value.trim_start();
        let (scheme, rest) = value.split_at(value.find(char::is_whitespace).unwrap_or(value.len()));
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let params = parse_params(rest)?;
        // First occurrence wins: a duplicate cannot override what we already accepted.
        let get = |name: &str| params.iter().find(|p| p.0 == name).map(|p| p.1.clone());

        let realm = get("realm").ok_or(DigestError::MissingParam("realm"))?;
        let nonce = get("nonce").ok_or(DigestError::MissingParam("nonce"))?;
        let algorithm = match get("algorithm") {
            None => Algorithm::Md5,
            Some(a) => match ALGORITHMS.iter().find(|k| k.1.eq_ignore_ascii_case(&a)) {
                Some(k) => k.0,
                None => return Err(DigestError::UnsupportedAlgorithm(a)),
            },
        };
        let qop_auth = match get("qop") {
            None => false,
            Some(q) if q.split(',').any(|o| o.trim().eq_ignore_ascii_case("auth")) => true,
            Some(q) => return Err(DigestError::UnsupportedQop(q)),
        };
        let stale = get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true"));
        let opaque = get("opaque");
        Ok(Challenge {
            realm,
            nonce,
            opaque,
            algorithm,
            qop_auth,
            stale,
        })
    }

    /// Picks the strongest supported challenge among several header values (RFC 7616 §3.7: SHA-256 preferred over MD5); errors only if none is usable.
    ///
    /// On equal strength the earlier value wins, since servers list their preference first.
    /// When all fail, a digest-specific error is reported in preference to `NotDigest`,
    /// because "Basic only" is less informative than "Digest with SHA-512-256".
    pub fn choose<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, DigestError> {
        let mut best: Option<Challenge> = None;
        let mut err = DigestError::NotDigest;
        for v in values {
            match Challenge::parse(v) {
                Ok(c) if best.is_none() => best = Some(c),
                Ok(c) if c.algorithm.is_sha256() => {
                    best = best.filter(|b| b.algorithm.is_sha256()).or(Some(c));
                }
                Ok(_) => {}
                Err(e) if err == DigestError::NotDigest => err = e,
                Err(_) => {}
            }
        }
        best.ok_or(err)
    }
}

/// Splits `name=value` pairs; names are lowercased so lookups are case-insensitive.
fn parse_params(s: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    let ws = |c: &char| c.is_ascii_whitespace();
    loop {
        while it.next_if(|c| ws(c) || *c == ',').is_some() {}
        if it.peek().is_none() {
            return Ok(out);
        }
        let mut name = String::new();
        while let Some(c) = it.next_if(|c| !ws(c) && !"=,\"".contains(*c)) {
            name.push(c.to_ascii_lowercase());
        }
        let bad = |what: &str| Err(DigestError::Malformed(format!("{what} `{name}`")));
        while it.next_if(ws).is_some() {}
        if name.is_empty() || it.next() != Some('=') {
            return bad("expected name=value at");
        }
        while it.next_if(ws).is_some() {}
        let mut val = String::new();
        if it.next_if_eq(&'"').is_some() {
            loop {
                match it.next() {
                    None => return bad("unterminated"),
                    Some('"') => break,
                    Some('\\') => val.extend(it.next()),
                    Some(c) => val.push(c),
                }
            }
        } else {
            val.extend(std::iter::from_fn(|| {
                it.next_if(|c| !ws(c) && !",\"".contains(*c))
            }));
            if val.is_empty() {
                return bad("empty value for");
            }
        }
        // Values are echoed into our own request; a CR/LF from the server would inject headers.
        if val.chars().any(|c| c.is_control() && c != '\t') {
            return bad("control character in");
        }
        out.push((name, val));
    }
}

/// One computed answer. `nc` is the nonce count for this nonce (1 for the first use, then 2, 3... while the same nonce is reused); `cnonce` a fresh random client nonce (the caller supplies it so this stays pure and testable).
///
/// Returns the Authorization / Proxy-Authorization header value. Without qop the
/// RFC 2069 response formula is used, as old MD5 servers expect. The -sess
/// algorithms still send `cnonce` without qop, because the server needs it to
/// rebuild HA1.
#[must_use]
pub fn authorization(
    ch: &Challenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let alg = ch.algorithm;
    let mut ha1 = alg.hash(&format!("{username}:{}:{password}", ch.realm));
    if alg.is_sess() {
        ha1 = alg.hash(&format!("{ha1}:{}:{cnonce}", ch.nonce));
    }
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    let nc = format!("{nc:08x}");
    let response = if ch.qop_auth {
        alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", ch.nonce))
    } else {
        alg.hash(&format!("{ha1}:{}:{ha2}", ch.nonce))
    };
    let mut out = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, response=\"{response}\", algorithm={alg}",
        quote(username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri),
    );
    if ch.qop_auth || alg.is_sess() {
        out.push_str(&format!(", cnonce={}", quote(cnonce)));
    }
    if ch.qop_auth {
        out.push_str(&format!(", qop=auth, nc={nc}"));
    }
    if let Some(o) = &ch.opaque {
        out.push_str(&format!(", opaque={}", quote(o)));
    }
    out
}

/// Re-escapes values so a realm or username containing `"` or `\` survives the round trip.
fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use DigestError::*;

    const RFC7616: &str = "Digest\r\n realm=\"http-auth@example.org\",\r\n qop=\"auth, auth-int\",\r\n algorithm=ALG,\r\n nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\",\r\n opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
    const RFC2617: &str = r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#;
    const CN7616: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    /// Answers `v` with `[user, pass, method, uri, cnonce]`; the returned lookup re-parses our
    /// header, so every test also proves the output reads back through the same grammar.
    fn answer(v: &str, a: [&str; 5], nc: u32) -> (String, impl Fn(&str) -> Option<String>) {
        let h = authorization(
            &Challenge::parse(v).unwrap(),
            a[0],
            a[1],
            a[2],
            a[3],
            nc,
            a[4],
        );
        let fields = parse_params(h.strip_prefix("Digest ").unwrap()).unwrap();
        (h, move |n: &str| {
            fields.iter().find(|f| f.0 == n).map(|f| f.1.clone())
        })
    }

    fn md5(s: &str) -> String {
        Algorithm::Md5.hash(s)
    }

    #[test]
    fn rfc_vectors() {
        #[rustfmt::skip]
        let cases = [
            (RFC7616.replace("ALG", "MD5"), "Circle of Life", CN7616, "8ca523f5e9506fed4657c9700eebdbec"),
            (RFC7616.replace("ALG", "SHA-256"), "Circle of Life", CN7616, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
            (RFC2617.to_string(), "Circle Of Life", "0a4f113b", "6629fae49393a05397450978507c4ef1"),
        ];
        for (v, pass, cnonce, want) in cases {
            let (h, f) = answer(&v, ["Mufasa", pass, "GET", "/dir/index.html", cnonce], 1);
            assert_eq!(f("response").as_deref(), Some(want), "{h}");
        }
        let args = ["Mufasa", "Circle of Life", "GET", "/dir/index.html", CN7616];
        let (h, _) = answer(&RFC7616.replace("ALG", "SHA-256"), args, 1);

        let want = "Digest username=\"Mufasa\", realm=\"http-auth@example.org\", \
            nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", uri=\"/dir/index.html\", \
            response=\"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1\", \
            algorithm=SHA-256, cnonce=\"f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ\", \
            qop=auth, nc=00000001, opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";
        assert_eq!(h, want);
    }

    #[test]
    fn kamailio_style() {
        let v = r#"Digest realm="127.0.0.1", nonce="Zf3K1mX9yQ3bqP9x0+9H4Nq0kV9Ylq8w", qop="auth""#;
        let ch = Challenge::parse(v).unwrap();
        assert!(ch.qop_auth && ch.algorithm == Algorithm::Md5 && ch.opaque.is_none());
        let (h, f) = answer(v, ["1001", "pw", "REGISTER", "sip:127.0.0.1", "abc"], 26);
        let got = ["username", "uri", "cnonce", "qop", "nc", "opaque"].map(f);
        let want = ["1001", "sip:127.0.0.1", "abc", "auth", "0000001a"].map(|s| Some(s.into()));
        assert_eq!(got[..5], want, "{h}");
        assert_eq!(got[5], None);
    }

    #[test]
    fn asterisk_style_without_qop() {
        let v = r#"Digest algorithm=MD5, realm="asterisk",nonce="1a2b3c4d""#;
        let (h, f) = answer(
            v,
            ["alice", "secret", "INVITE", "sip:bob@asterisk", "zz"],
            1,
        );
        let (ha1, ha2) = (md5("alice:asterisk:secret"), md5("INVITE:sip:bob@asterisk"));
        assert_eq!(f("response"), Some(md5(&format!("{ha1}:1a2b3c4d:{ha2}"))));
        assert_eq!(f("algorithm").as_deref(), Some("MD5"));
        assert!(
            ["nc", "cnonce", "qop", "opaque"]
                .iter()
                .all(|n| f(n).is_none()),
            "{h}"
        );
    }

    #[test]
    fn qop_lists() {
        for q in [
            r#""auth,auth-int""#,
            r#""auth-int, auth""#,
            "auth",
            "\"AUTH\"",
        ] {
            let ch = Challenge::parse(&format!("digest realm=r, nonce=n, qop={q}"));
            assert!(ch.unwrap().qop_auth, "{q}");
        }
        let only_int = Challenge::parse(r#"Digest realm="r", nonce="n", qop="auth-int""#);
        assert_eq!(only_int, Err(UnsupportedQop("auth-int".into())));
    }

    #[test]
    fn choose_prefers_sha256() {
        let md5 = r#"Digest realm="r", nonce="a", qop="auth", algorithm=MD5"#;
        let sha = r#"Digest realm="r", nonce="b", qop="auth", algorithm=SHA-256"#;
        let bad = r#"Digest realm="r", nonce="c", algorithm=SHA-512-256"#;
        for order in [[md5, sha, bad], [bad, sha, md5], [sha, md5, bad]] {
            let ch = Challenge::choose(order).unwrap();
            assert_eq!((ch.algorithm, ch.nonce.as_str()), (Algorithm::Sha256, "b"));
        }
        let basic = "Basic realm=x";
        assert_eq!(Challenge::choose([basic, md5]).unwrap().nonce, "a");
        let none = Challenge::choose([basic, bad]);
        assert_eq!(none, Err(UnsupportedAlgorithm("SHA-512-256".into())));
        assert_eq!(Challenge::choose([]), Err(NotDigest));
    }

    #[test]
    fn stale_case_and_unknown_params() {
        let p = |v: &str| Challenge::parse(v).unwrap();
        for s in ["true", "TRUE", "\"true\""] {
            let v =
                format!("DIGEST Realm=r, NONCE=n, stale={s}, domain=\"sip:a sip:b\", userhash=1");
            assert!(p(&v).stale, "{s}");
        }
        assert!(!p("Digest realm=r, nonce=n, stale=FALSE").stale);
        let ch = p("Digest realm=r,nonce=n,algorithm=\"sha-256-SESS\"");
        assert_eq!(ch.algorithm.to_string(), "SHA-256-sess");
    }

    #[test]
    fn errors() {
        let p = Challenge::parse;
        for v in ["", "Basic realm=\"x\"", "Digestrealm=x"] {
            assert_eq!(p(v), Err(NotDigest), "{v}");
        }
        assert_eq!(p("Digest nonce=n"), Err(MissingParam("realm")));
        assert_eq!(p("Digest realm=r"), Err(MissingParam("nonce")));
        let sha1 = p("Digest realm=r, nonce=n, algorithm=SHA1");
        assert_eq!(sha1, Err(UnsupportedAlgorithm("SHA1".into())));
        for v in [
            "Digest realm=\"r, nonce=n",
            "Digest realm, nonce=n",
            "Digest nonce=\"\r\nX\"",
        ] {
            assert!(matches!(p(v), Err(Malformed(_))), "{v}");
        }
    }

    #[test]
    fn sess_and_escapes_round_trip() {
        let v = r#"Digest realm="a \"q\" \\ b", nonce="n", algorithm=MD5-sess"#;
        let realm = r#"a "q" \ b"#;
        assert_eq!(Challenge::parse(v).unwrap().realm, realm);
        let (h, f) = answer(v, ["u", "p", "REGISTER", "sip:x", "cn"], 1);
        let ha1 = md5(&format!("{}:n:cn", md5(&format!("u:{realm}:p"))));
        assert_eq!(
            f("response"),
            Some(md5(&format!("{ha1}:n:{}", md5("REGISTER:sip:x"))))
        );
        assert_eq!(
            (f("realm").unwrap(), f("cnonce").unwrap()),
            (realm.into(), "cn".into())
        );
        assert!(
            f("nc").is_none() && h.contains(r#"realm="a \"q\" \\ b""#),
            "{h}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let huge = format!(
            "Digest realm=\"{}\", nonce={}",
            "x".repeat(1 << 20),
            "é".repeat(99)
        );
        let garbage = "| |\"|Digest|Digest |Digest =|Digest ,,,|Digest a=\"\\|Digest a=\\\"|\
            Digest realm=\"|Digest realm=\"r\" nonce|Digest realm=é, nonce=ü, qop=\"ä\"|Dïgest x|é|\
            Digest\0|Digest realm==x|Digest \"realm\"=x|\u{feff}Digest realm=r, nonce=n|\
            Digest\u{a0}realm=r|Digest realm=r, nonce=n, qop=|Digest realm=r, nonce=n, qop=\"\"";
        for v in garbage.split('|').chain([huge.as_str()]) {
            let cuts = (0..=v.len().min(64)).filter(|&i| v.is_char_boundary(i));
            cuts.for_each(|i| drop(Challenge::parse(&v[..i])));
            let _ = Challenge::parse(v);
        }
        assert_eq!(Challenge::parse(&huge).unwrap().realm.len(), 1 << 20);
    }
}
