//! The ceiling that `benches/api.sh` measures Passage against: axum on the same runtime, answering
//! every GET with one JSON body read from a file at start (the portal's own answer, captured in
//! the same run), with no authentication, database or rendering behind it.
//!
//!     passage-api-ceiling BODY.json 127.0.0.1:PORT

use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(body), Some(listen)) = (args.next(), args.next()) else {
        eprintln!("usage: passage-api-ceiling BODY.json ADDRESS");
        std::process::exit(2);
    };
    let body: &'static [u8] = Vec::leak(std::fs::read(&body)?);
    let answer =
        move || async move { ([(CONTENT_TYPE, "application/json")], body).into_response() };
    let app = Router::new().fallback(get(answer));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await
}
