//! `WWW-Authenticate` challenges (RFC 9110 section 11.6.1) as registries send them:
//! `Bearer realm="https://auth.example.com/token",service="registry",scope="..."` or
//! `Basic realm="Registry"`, possibly several in one header.

use std::collections::BTreeMap;

/// One authentication challenge: its scheme (lower-cased) and parameters (names
/// lower-cased, values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub parameters: BTreeMap<String, String>,
}

impl Challenge {
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.get(name).map(String::as_str)
    }
}

/// Every challenge in a header value; what cannot be read is left out.
pub(crate) fn parse(header: &str) -> Vec<Challenge> {
    let mut cursor = Cursor {
        text: header.as_bytes(),
        at: 0,
    };
    let mut challenges = Vec::new();
    loop {
        cursor.skip(|b| b == b' ' || b == b'\t' || b == b',');
        let scheme = cursor.token();
        if scheme.is_empty() {
            break;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            parameters: BTreeMap::new(),
        };
        // Parameters until the next challenge (a token not followed by `=`) or the end.
        loop {
            cursor.skip(|b| b == b' ' || b == b'\t' || b == b',');
            let start = cursor.at;
            let name = cursor.token();
            cursor.skip(|b| b == b' ' || b == b'\t');
            if name.is_empty() || !cursor.eat(b'=') {
                cursor.at = start;
                break;
            }
            cursor.skip(|b| b == b' ' || b == b'\t');
            let value = if cursor.peek() == Some(b'"') {
                cursor.quoted()
            } else {
                cursor.token()
            };
            challenge
                .parameters
                .insert(name.to_ascii_lowercase(), value);
        }
        // What follows is the next challenge's scheme, or something no rule reads,
        // which ends the parse on the next turn.
        challenges.push(challenge);
    }
    challenges
}

struct Cursor<'a> {
    text: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.peek() == Some(byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip(&mut self, skipped: impl Fn(u8) -> bool) {
        while self.peek().is_some_and(&skipped) {
            self.at += 1;
        }
    }

    /// An RFC 9110 token (`token68` characters included, for `Basic` credentials).
    fn token(&mut self) -> String {
        let start = self.at;
        self.skip(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b));
        String::from_utf8_lossy(&self.text[start..self.at]).into_owned()
    }

    /// A quoted string, the cursor on its opening quote; backslash escapes the next
    /// character. An unterminated string runs to the end.
    fn quoted(&mut self) -> String {
        self.at += 1;
        let mut value = Vec::new();
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    if let Some(escaped) = self.peek() {
                        value.push(escaped);
                        self.at += 1;
                    }
                }
                other => value.push(other),
            }
        }
        String::from_utf8_lossy(&value).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_gives_its_realm_service_and_scope() {
        let challenges = parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#,
        );
        assert_eq!(challenges.len(), 1);
        let bearer = &challenges[0];
        assert_eq!(bearer.scheme, "bearer");
        assert_eq!(
            bearer.parameter("realm"),
            Some("https://auth.docker.io/token")
        );
        assert_eq!(bearer.parameter("service"), Some("registry.docker.io"));
        assert_eq!(
            bearer.parameter("scope"),
            Some("repository:library/nginx:pull")
        );
    }

    #[test]
    fn a_basic_challenge_is_recognised_whatever_its_case_and_spacing() {
        let challenges = parse(r#"basic  Realm = "Registry Realm""#);
        assert_eq!(challenges.len(), 1);
        assert_eq!(challenges[0].scheme, "basic");
        assert_eq!(challenges[0].parameter("realm"), Some("Registry Realm"));
    }

    #[test]
    fn several_challenges_in_one_header_are_told_apart() {
        let challenges = parse(
            r#"Basic realm="a, b", Bearer realm="https://auth/token", scope="repository:x/y:pull,push", service=reg"#,
        );
        let schemes: Vec<_> = challenges.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, ["basic", "bearer"]);
        assert_eq!(challenges[0].parameter("realm"), Some("a, b"));
        assert_eq!(
            challenges[1].parameter("scope"),
            Some("repository:x/y:pull,push")
        );
        assert_eq!(challenges[1].parameter("service"), Some("reg"));
    }

    #[test]
    fn escaped_quotes_stay_in_the_value_and_broken_headers_do_not_panic() {
        let challenges = parse(r#"Bearer realm="say \"hi\"""#);
        assert_eq!(challenges[0].parameter("realm"), Some(r#"say "hi""#));
        for broken in ["", "=", "Bearer realm=\"open", ",,,", "Bearer =x", "\"\""] {
            let _ = parse(broken);
        }
        assert!(parse("Bearer realm=\"open").len() == 1);
    }
}
