//! Cursor paging of the API's lists: `?limit=N` (1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] when
//! left out) answers the first N items; when there are more, the response's `Link` header names
//! the next page (`rel="next"`, RFC 8288) with an opaque `cursor`, the other parameters kept.
//! A cursor stays valid while items come and go: the next page starts after the last item
//! shown, not at a count.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

use crate::api::ApiError;
use crate::store::Window;

/// Items per page when the request does not say.
pub const DEFAULT_LIMIT: u32 = 500;
/// The most items one page holds.
pub const MAX_LIMIT: u32 = 1000;

/// `limit` and `cursor` of a list whose items are newest first by id.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page: 1 to 1000 (default 500).
    pub limit: Option<u32>,
    /// Where the page starts: the `cursor` of the previous page's `Link: <...>; rel="next"`.
    pub cursor: Option<String>,
}

/// The page asked for, or a 400 naming what does not parse.
pub fn query(
    page: Result<axum::extract::Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Result<Page, ApiError> {
    page.map(|axum::extract::Query(page)| page).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{}; paging takes limit (1 to {MAX_LIMIT}) and cursor",
                e.body_text()
            ),
        )
    })
}

impl Page {
    /// The page's size, checked.
    pub fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(n) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("limit must be 1 to {MAX_LIMIT}, not {n}"),
            )),
        }
    }

    /// The rows to read for an id-ordered list: one more than the page, to know whether another
    /// page follows.
    pub fn window(&self) -> Result<Window, ApiError> {
        let before = match self.cursor.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<i64>()
                    .ok()
                    .filter(|id| *id > 0)
                    .ok_or_else(|| bad_cursor(text))?,
            ),
        };
        Ok(Window {
            before,
            limit: Some(i64::from(self.limit()?) + 1),
        })
    }
}

/// A cursor that this portal did not make.
pub fn bad_cursor(text: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        format!("{text:?} is not a cursor: take it from the Link header of the previous page"),
    )
}

/// One page of an id-ordered list read through [`Page::window`], with the link to the next.
pub fn by_id<T: Serialize>(
    uri: &Uri,
    page: &Page,
    mut items: Vec<T>,
    id: impl Fn(&T) -> i64,
) -> Result<Response, ApiError> {
    let limit = page.limit()? as usize;
    let next = (items.len() > limit).then(|| {
        items.truncate(limit);
        items.last().map(|last| id(last).to_string())
    });
    Ok(answer(uri, &items, next.flatten()))
}

/// `items` as JSON, with a `Link` to the page after `next` when there is one.
pub fn answer<T: Serialize>(uri: &Uri, items: &[T], next: Option<String>) -> Response {
    let mut response = Json(items).into_response();
    if let Some(link) = next.and_then(|cursor| next_link(uri, &cursor)) {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// `<path?query with cursor=...>; rel="next"`.
fn next_link(uri: &Uri, cursor: &str) -> Option<HeaderValue> {
    let mut pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(uri.query().unwrap_or_default()).unwrap_or_default();
    pairs.retain(|(name, _)| name != "cursor");
    pairs.push(("cursor".into(), cursor.into()));
    let query = serde_urlencoded::to_string(&pairs).ok()?;
    HeaderValue::from_str(&format!("<{}?{query}>; rel=\"next\"", uri.path())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_link_keeps_the_filters_and_replaces_the_cursor() {
        let uri: Uri = "/api/v1/jobs?state=failed&cursor=90&limit=2"
            .parse()
            .unwrap();
        let page = Page {
            limit: Some(2),
            cursor: Some("90".into()),
        };
        let response = by_id(&uri, &page, vec![80_i64, 70, 60], |id| *id).unwrap();
        assert_eq!(
            response.headers()[header::LINK],
            "</api/v1/jobs?state=failed&limit=2&cursor=70>; rel=\"next\""
        );
        let last = by_id(&uri, &page, vec![50_i64, 40], |id| *id).unwrap();
        assert!(!last.headers().contains_key(header::LINK));
    }

    #[test]
    fn limits_and_cursors_are_checked() {
        let page = |limit, cursor: &str| Page {
            limit,
            cursor: Some(cursor.to_string()),
        };
        assert_eq!(page(None, "").window().unwrap().limit, Some(501));
        assert_eq!(page(Some(3), "12").window().unwrap().before, Some(12));
        assert!(page(Some(0), "").window().is_err());
        assert!(page(Some(1001), "").window().is_err());
        assert!(page(None, "x").window().is_err());
        assert!(page(None, "-4").window().is_err());
    }
}
