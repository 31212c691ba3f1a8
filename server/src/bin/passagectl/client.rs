//! The HTTP side: requests to the portal's API with the bearer token, and what can go wrong.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LINK};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::token::Token;

/// How long to wait for the portal to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for a whole answer: releasing a VM waits for its guest to shut down.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(300);

/// The most pages of one list followed: far more than any portal has, and an end to a loop.
const MAX_PAGES: usize = 10_000;

/// Why a command failed; each kind has its own exit status.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The API refused or failed: its `{"error": ...}` message and the HTTP status.
    #[error("{message} (HTTP {status}{hint})", hint = hint(.status))]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The API's message.
        message: String,
    },
    /// No answer from the portal: nothing listens there, the name does not resolve, TLS fails
    /// or it took too long.
    #[error("cannot reach the portal at {url}: {reason}")]
    Unreachable {
        /// The portal's address as given.
        url: String,
        /// What failed, in the words of the layer that failed.
        reason: String,
    },
    /// Nothing was sent: no token, a token file others can read, a URL that is not one.
    #[error("{0}")]
    Setup(String),
    /// The portal answered something this client does not understand.
    #[error("{0}")]
    Unexpected(String),
}

impl Failure {
    /// The exit status: 1 for the API's refusals, 2 for setup problems, 3 for an unreachable
    /// portal.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Api { .. } | Failure::Unexpected(_) => 1,
            Failure::Setup(_) => 2,
            Failure::Unreachable { .. } => 3,
        }
    }
}

/// What to add to a status for people: a rejected token has a usual cause.
fn hint(status: &StatusCode) -> &'static str {
    if *status == StatusCode::UNAUTHORIZED {
        "; the token was not accepted: it may be mistyped, expired or revoked"
    } else {
        ""
    }
}

/// A successful answer's body, exactly as the portal sent it.
#[derive(Debug)]
pub struct Answer {
    /// The body (JSON for every route this client calls; empty for 204).
    pub text: String,
    /// Where the next page of a list is, from the `Link: <...>; rel="next"` header.
    next: Option<String>,
}

impl Answer {
    /// The body read into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Failure> {
        serde_json::from_str(&self.text).map_err(|e| {
            Failure::Unexpected(format!(
                "the portal's answer is not what this passagectl understands ({e}); \
                 --json prints it as it came"
            ))
        })
    }
}

/// The portal's API, with the token on every request.
#[derive(Debug)]
pub struct Api {
    /// The portal's address as given, for messages.
    shown: String,
    base: Url,
    http: reqwest::Client,
}

impl Api {
    /// A client for the portal at `url` (e.g. `https://passage.example.org`, or with a path
    /// prefix when a proxy serves it under one).
    pub fn new(url: &str, token: &Token) -> Result<Api, Failure> {
        let mut base = Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
            .ok_or_else(|| {
                Failure::Setup(format!(
                    "--url/PASSAGE_URL {url:?} is not an http:// or https:// URL"
                ))
            })?;
        base.set_query(None);
        base.set_fragment(None);
        let mut bearer =
            HeaderValue::from_str(&format!("Bearer {}", token.secret())).map_err(|_| {
                Failure::Setup(format!(
                    "the token from {} has characters that cannot be sent",
                    token.source()
                ))
            })?;
        // Kept out of debug output and logs.
        bearer.set_sensitive(true);
        let headers = HeaderMap::from_iter([(AUTHORIZATION, bearer)]);
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("passagectl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ANSWER_TIMEOUT)
            .build()
            .map_err(|e| Failure::Setup(format!("cannot set up HTTP: {}", innermost(&e))))?;
        Ok(Api {
            shown: url.to_string(),
            base,
            http,
        })
    }

    /// `GET /api/v1{path}` with these query parameters.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Answer, Failure> {
        let mut url = self.url(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        self.send(self.http.get(url)).await
    }

    /// `GET /api/v1{path}` of a list, every page of it: the portal answers a long list in pages
    /// and names the next in a `Link` header. The pages' JSON arrays are joined into one, each
    /// item as the portal wrote it.
    pub async fn get_all(&self, path: &str, query: &[(&str, &str)]) -> Result<Answer, Failure> {
        let mut answer = self.get(path, query).await?;
        let mut items = Vec::new();
        for _ in 0..MAX_PAGES {
            let Some(next) = answer.next.take() else {
                break;
            };
            items.push(array_items(&answer.text)?.to_string());
            answer = self.send(self.http.get(self.link(&next)?)).await?;
        }
        if items.is_empty() {
            return Ok(answer);
        }
        items.push(array_items(&answer.text)?.to_string());
        items.retain(|i| !i.is_empty());
        Ok(Answer {
            text: format!("[{}]", items.join(",")),
            next: None,
        })
    }

    /// `POST /api/v1{path}`, with `body` as JSON when there is one.
    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<Answer, Failure> {
        let mut request = self.http.request(Method::POST, self.url(path));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    /// `DELETE /api/v1{path}`.
    pub async fn delete(&self, path: &str) -> Result<Answer, Failure> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// The address of an API route, below the base URL's own path.
    fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{prefix}/api/v1{path}"));
        url
    }

    /// The address a `Link` header names: a path on the portal (below the base URL's own path,
    /// as for a proxy that serves the portal under a prefix) or a whole URL on the portal. The
    /// token goes to the portal only: a page elsewhere is refused.
    fn link(&self, target: &str) -> Result<Url, Failure> {
        let joined = if target.starts_with('/') && !target.starts_with("//") {
            let prefix = self.base.path().trim_end_matches('/');
            self.base.join(&format!("{prefix}{target}"))
        } else {
            self.base.join(target)
        };
        joined
            .ok()
            .filter(|url| url.origin() == self.base.origin())
            .ok_or_else(|| {
                Failure::Unexpected(format!(
                    "the portal named a next page that is not on the portal: {target}"
                ))
            })
    }

    /// Sends a request; anything but a 2xx answer is a [`Failure`].
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Answer, Failure> {
        let unreachable = |e: reqwest::Error| Failure::Unreachable {
            url: self.shown.clone(),
            reason: if e.is_timeout() {
                "it did not answer in time".into()
            } else {
                innermost(&e)
            },
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let next = response
            .headers()
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_link);
        let text = response.text().await.map_err(unreachable)?;
        if status.is_success() {
            Ok(Answer { text, next })
        } else {
            Err(Failure::Api {
                status,
                message: error_message(&text),
            })
        }
    }
}

/// The target of the `rel="next"` link in a `Link` header's value, e.g.
/// `</api/v1/jobs?limit=500&cursor=70>; rel="next"`.
fn next_link(value: &str) -> Option<String> {
    value.split(',').find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("rel="))
            .any(|rel| {
                rel.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r == "next")
            })
            .then(|| target.to_string())
    })
}

/// What is between the brackets of a JSON array, as written.
fn array_items(text: &str) -> Result<&str, Failure> {
    text.trim()
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .map(str::trim)
        .ok_or_else(|| Failure::Unexpected("a page of a list that is not a JSON array".into()))
}

/// The API's message from an error body `{"error": "...", "fields": {...}}`; the start of the
/// body when it is not one (e.g. a proxy's page).
fn error_message(text: &str) -> String {
    let body: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let Some(error) = body["error"].as_str() else {
        let start: String = text.trim().chars().take(200).collect();
        return match start.lines().next() {
            Some(line) if !line.is_empty() => format!("the portal answered: {line}"),
            _ => "the portal answered without a message".into(),
        };
    };
    // A request with bad fields names each one.
    match body["fields"].as_object() {
        Some(fields) if !fields.is_empty() => {
            let each: Vec<String> = fields
                .iter()
                .map(|(field, why)| format!("{field}: {}", why.as_str().unwrap_or_default()))
                .collect();
            format!("{error}: {}", each.join("; "))
        }
        _ => error.to_string(),
    }
}

/// The last error in a chain: the one that says what actually failed (e.g. "Connection
/// refused") where the outer ones say "error sending request".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(source) = last.source() {
        last = source;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_body_gives_its_message_and_fields() {
        assert_eq!(
            error_message(r#"{"error": "only admins may do this"}"#),
            "only admins may do this"
        );
        assert_eq!(
            error_message(
                r#"{"error": "some fields are not valid", "fields": {"image": "no such image", "vcpus": "too many"}}"#
            ),
            "some fields are not valid: image: no such image; vcpus: too many"
        );
        assert_eq!(
            error_message("<html>Bad Gateway</html>\nmore"),
            "the portal answered: <html>Bad Gateway</html>"
        );
        assert_eq!(error_message(""), "the portal answered without a message");
    }

    #[test]
    fn the_next_page_is_found_among_the_links() {
        assert_eq!(
            next_link(r#"</api/v1/jobs?state=failed&limit=2&cursor=70>; rel="next""#).as_deref(),
            Some("/api/v1/jobs?state=failed&limit=2&cursor=70")
        );
        assert_eq!(
            next_link(r#"</a?cursor=1>; rel="prev", </b?cursor=9>; rel=next"#).as_deref(),
            Some("/b?cursor=9")
        );
        assert_eq!(next_link(r#"</a>; rel="prev""#), None);
    }

    #[test]
    fn pages_join_into_one_array_as_written() {
        let token = Token::for_tests("psg_x");
        let api = Api::new("https://portal.example/passage/", &token).unwrap();
        assert_eq!(
            api.link("/api/v1/vms?cursor=3").unwrap().as_str(),
            "https://portal.example/passage/api/v1/vms?cursor=3"
        );
        assert!(api.link("https://elsewhere.example/api/v1/vms").is_err());
        assert!(api.link("//elsewhere.example/api/v1/vms").is_err());
        assert_eq!(
            array_items(" [ {\"a\": 1}, 2 ]\n").unwrap(),
            "{\"a\": 1}, 2"
        );
        assert_eq!(array_items("[]").unwrap(), "");
        assert!(array_items("{}").is_err());
    }
}
