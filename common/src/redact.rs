//! Secrets shown without their values, for commands that print settings: a header's value
//! becomes its length, a URL loses its password and the values of query parameters that look
//! like credentials. Nothing here decides what is secret; callers redact every value that may be.

use std::borrow::Cow;

/// What is printed in place of a secret: `<redacted, 23 bytes>`. The length helps tell an
/// empty or truncated value from the expected one without showing it.
pub fn value(secret: &str) -> String {
    format!("<redacted, {} bytes>", secret.len())
}

/// Query parameter names (lower case) whose values are redacted when a name contains one.
const SECRET_PARAMS: &[&str] = &["token", "key", "secret", "pass", "auth", "sig", "credential", "session"];

/// `url` with its user information's password redacted (`https://ops:<redacted, 6 bytes>@host/`;
/// a user name alone, often a token, is redacted whole) and the values of query parameters
/// named like credentials (`?api_key=<redacted, 8 bytes>`). Text that is not a URL comes back
/// unchanged.
pub fn url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return Cow::Borrowed(url) };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let mut out = String::with_capacity(url.len() + 24);
    out.push_str(&url[..scheme_end]);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            match userinfo.split_once(':') {
                Some((user, password)) => {
                    out.push_str(user);
                    out.push(':');
                    out.push_str(&value(password));
                }
                None => out.push_str(&value(userinfo)),
            }
            out.push('@');
            out.push_str(host);
        }
        None => out.push_str(authority),
    }
    let (before_fragment, fragment) = match tail.find('#') {
        Some(i) => tail.split_at(i),
        None => (tail, ""),
    };
    match before_fragment.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    out.push('&');
                }
                match pair.split_once('=') {
                    Some((name, v)) if secret_param(name) => {
                        out.push_str(name);
                        out.push('=');
                        out.push_str(&value(v));
                    }
                    _ => out.push_str(pair),
                }
            }
        }
        None => out.push_str(before_fragment),
    }
    out.push_str(fragment);
    if out == url {
        Cow::Borrowed(url)
    } else {
        Cow::Owned(out)
    }
}

fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::{url, value};

    #[test]
    fn passwords_and_credential_parameters_are_redacted() {
        assert_eq!(value("Bearer abc"), "<redacted, 10 bytes>");
        assert_eq!(url("https://ops:hunter2@app.example.com/x"), "https://ops:<redacted, 7 bytes>@app.example.com/x");
        assert_eq!(url("https://ghp_token@github.com"), "https://<redacted, 9 bytes>@github.com");
        assert_eq!(
            url("http://h:8080/p?a=1&api_key=s3cret&Token=t#frag"),
            "http://h:8080/p?a=1&api_key=<redacted, 6 bytes>&Token=<redacted, 1 bytes>#frag"
        );
        // An '@' after the authority is not user information.
        assert_eq!(url("https://h/a@b?x=1"), "https://h/a@b?x=1");
        for plain in ["https://app.example.com/health", "10.0.0.5:5432", "", "://", "a://b@"] {
            assert!(!url(plain).contains("redacted") || plain.contains('@'), "{plain}");
        }
        assert_eq!(url("a://b@"), "a://<redacted, 1 bytes>@");
    }
}
