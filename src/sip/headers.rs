//! Reading headers by name from rsipstack messages, whether its parser made them typed
//! (`Header::Event`) or left them as `Header::Other`.

use rsipstack::sip::Header;

/// The values of every header called `name` (case-insensitive), in order.
pub fn values<'a>(
    headers: impl IntoIterator<Item = &'a Header>,
    name: &'a str,
) -> impl Iterator<Item = &'a str> {
    headers
        .into_iter()
        .filter(move |h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value())
}

/// The first value of the header called `name`.
pub fn value<'a>(headers: impl IntoIterator<Item = &'a Header>, name: &'a str) -> Option<&'a str> {
    values(headers, name).next()
}

/// Whether a comma-separated header (`Supported`, `Allow`, `Require`) lists `token`.
pub fn lists<'a>(
    headers: impl IntoIterator<Item = &'a Header>,
    name: &'a str,
    token: &str,
) -> bool {
    values(headers, name)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A header the stack has no typed variant for.
pub fn other(name: &str, value: impl Into<String>) -> Header {
    Header::Other(name.to_string(), value.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typed_and_untyped_headers_by_name() {
        let h = vec![
            Header::Supported("100rel, Timer".into()),
            other("session-expires", "90;refresher=uac"),
            Header::Allow("INVITE, UPDATE".into()),
        ];
        assert!(lists(&h, "supported", "timer"));
        assert!(!lists(&h, "supported", "replaces"));
        assert!(lists(&h, "Allow", "update"));
        assert_eq!(value(&h, "Session-Expires"), Some("90;refresher=uac"));
        assert_eq!(value(&h, "Min-SE"), None);
    }
}
