//! What may be logged of a URL that can hold a secret. A Slack or generic
//! webhook URL is its own credential (Slack's path is the token), and any
//! URL may carry a user and password: logs and error messages name only
//! the scheme and host, so an operator knows which receiver failed and a
//! reader of the log learns nothing that lets them post to it. Names put
//! into URLs are escaped ([`PATH_SEGMENT`]).

/// The characters escaped in a name put into a URL path segment (a link
/// to an alarm): everything but unreserved characters, so a name from a
/// database can neither end the segment nor the link (`|`, `>` in Slack).
pub const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `https://hooks.slack.com/…` from
/// `https://hooks.slack.com/services/T000/B000/XXXX`: the scheme and the
/// host (with its port), without a user, a path or a query.
pub fn url_for_log(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "<a URL that does not parse>".to_string(),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let hidden = authority.len() < rest.len() || host.len() < authority.len();
    format!("{scheme}://{host}{}", if hidden { "/…" } else { "" })
}

/// `dXNlcjpwdw==` for `user` and `pw`: how an `Authorization: Basic`
/// header carries a URL's user and password, so a server or proxy that
/// echoes the request echoes the password in this form; what quotes an
/// error must scrub it too.
pub fn basic_credentials(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_scheme_and_host_are_left() {
        assert_eq!(
            url_for_log("https://hooks.slack.com/services/T0/B0/SECRET"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            url_for_log("http://user:pw@hook.example:8080/x?token=SECRET"),
            "http://hook.example:8080/…"
        );
        assert_eq!(url_for_log("http://peer:8080"), "http://peer:8080");
        assert_eq!(url_for_log("http://u:SECRET@peer"), "http://peer/…");
        assert!(!url_for_log("not a url SECRET").contains("SECRET"));
        assert!(!url_for_log("http://h?SECRET").contains("SECRET"));
    }
}
