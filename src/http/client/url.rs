//! Where a request goes: an upstream's base URL and a request target.

use std::fmt;

/// Why a URL cannot be an upstream's (or a webhook's, a token realm's) base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Neither `http://` nor `https://`.
    Scheme(String),
    /// `user:password@` in the authority.
    Credentials(String),
    /// An IPv6 host without its `]`.
    UnclosedBracket(String),
    NoHost(String),
    Port {
        url: String,
        port: String,
    },
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::Scheme(t) => write!(f, "{t:?} must start with http:// or https://"),
            UrlError::Credentials(t) => {
                write!(
                    f,
                    "{t:?}: put credentials in username/password, not the URL"
                )
            }
            UrlError::UnclosedBracket(t) => write!(f, "{t:?}: unclosed [ in host"),
            UrlError::NoHost(t) => write!(f, "{t:?} has no host"),
            UrlError::Port { url, port } => write!(f, "{url:?}: invalid port {port:?}"),
        }
    }
}

impl std::error::Error for UrlError {}

/// An upstream's base URL: scheme, host, port and an optional path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing `/` ("" for most registries).
    pub path: String,
}

impl UpstreamUrl {
    pub fn parse(text: &str) -> Result<UpstreamUrl, UrlError> {
        let (https, rest) = if let Some(r) = text.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = text.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(UrlError::Scheme(text.into()));
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UrlError::Credentials(text.into()));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| UrlError::UnclosedBracket(text.into()))?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::NoHost(text.into()));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| UrlError::Port {
                url: text.into(),
                port: p.into(),
            })?,
            None if https => 443,
            None => 80,
        };
        Ok(UpstreamUrl {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The Host header value.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    pub(super) fn same_origin(&self, other: &UpstreamUrl) -> bool {
        self.https == other.https && self.host == other.host && self.port == other.port
    }
}

/// Where a request goes: an origin and a request target (path and query).
#[derive(Debug, Clone)]
pub struct Target {
    pub url: UpstreamUrl,
    /// Starts with `/`, includes the base path and the query.
    pub path: String,
}

impl Target {
    /// An absolute URL as a target: its origin, and its path with the query as the request
    /// target.
    pub fn absolute(text: &str) -> Result<Target, UrlError> {
        let url = UpstreamUrl::parse(text)?;
        let after_scheme = text.split_once("://").map_or("", |(_, r)| r);
        let path = match after_scheme.find('/') {
            Some(i) => after_scheme[i..].to_string(),
            None => "/".to_string(),
        };
        Ok(Target {
            url: UpstreamUrl {
                path: String::new(),
                ..url
            },
            path,
        })
    }

    /// `Location` resolved against this target: absolute URL or absolute path.
    pub fn redirected(&self, location: &str) -> Option<Target> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Target::absolute(location).ok()
        } else if location.starts_with('/') {
            Some(Target {
                url: self.url.clone(),
                path: location.to_string(),
            })
        } else {
            None
        }
    }
}
