//! What every response carries and what every request may take: security headers on pages,
//! API, files and errors (a Content-Security-Policy whose nonce is the one of the page's own
//! scripts), a time limit that answers instead of hanging while uploads are not cut, and a
//! concurrency limit that refuses at once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use passage_server::Portal;
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {headers:?}"))
        .to_str()
        .unwrap()
}

/// The nonce of the policy, and the nonces of the page's inline scripts.
fn nonces(policy: &str, html: &str) -> (String, Vec<String>) {
    let start = policy.find("'nonce-").expect("a page policy has a nonce") + "'nonce-".len();
    let end = start + policy[start..].find('\'').unwrap();
    let in_page = html
        .match_indices("nonce=\"")
        .map(|(i, m)| {
            let rest = &html[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect();
    (policy[start..end].to_string(), in_page)
}

fn assert_guarded(what: &str, headers: &HeaderMap, hsts: bool) {
    assert_eq!(
        header(headers, "x-content-type-options"),
        "nosniff",
        "{what}"
    );
    assert_eq!(header(headers, "referrer-policy"), "same-origin", "{what}");
    assert_eq!(header(headers, "x-frame-options"), "DENY", "{what}");
    let policy = header(headers, "content-security-policy");
    assert!(
        policy.contains("frame-ancestors 'none'"),
        "{what}: {policy}"
    );
    assert!(!policy.contains("'unsafe-eval'"), "{what}: {policy}");
    assert_eq!(
        headers.contains_key("strict-transport-security"),
        hsts,
        "{what}: HSTS only over TLS"
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_pages_their_own_nonce() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), &[]);
    std::fs::create_dir_all(config.site_dir.join("pkg")).unwrap();
    std::fs::write(
        config.site_dir.join("pkg/passage.css"),
        "body { margin: 0 }",
    )
    .unwrap();
    let token = common::token_for(&config, "ada", false).await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // Pages: the policy's nonce is the one on the page's inline scripts, new for each response.
    let mut seen = Vec::new();
    for path in ["/", "/login", "/no/such/page"] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        let headers = response.headers().clone();
        assert_guarded(path, &headers, false);
        let html = response.text().await.unwrap();
        let policy = header(&headers, "content-security-policy");
        assert!(
            policy.contains("script-src 'self' 'nonce-")
                && !policy.contains("script-src 'self' 'unsafe-inline'"),
            "{path}: {policy}"
        );
        let (nonce, in_page) = nonces(policy, &html);
        assert!(nonce.len() >= 16, "{nonce}");
        assert!(
            !in_page.is_empty(),
            "{path}: the hydration script carries a nonce"
        );
        assert!(
            in_page.iter().all(|n| *n == nonce),
            "{path}: {in_page:?} vs {nonce}"
        );
        assert!(!seen.contains(&nonce), "a nonce is used once");
        seen.push(nonce);
    }

    // Everything else: the policy that allows nothing, and the same headers.
    let api = common::client(&token);
    let answers = [
        (
            "a file",
            http.get(format!("{base}/pkg/passage.css"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "the health check",
            http.get(format!("{base}/healthz")).send().await.unwrap(),
        ),
        (
            "JSON",
            api.get(format!("{base}/api/v1/hosts"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "a 401",
            http.get(format!("{base}/api/v1/hosts"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "an unknown endpoint",
            http.get(format!("{base}/api/v1/nothing"))
                .send()
                .await
                .unwrap(),
        ),
        (
            "a 405",
            http.delete(format!("{base}/healthz")).send().await.unwrap(),
        ),
        (
            "a refused body",
            http.post(format!("{base}/api/v1/login"))
                .header("content-type", "application/json")
                .body("{not json")
                .send()
                .await
                .unwrap(),
        ),
        (
            "a sign-in redirect",
            http.post(format!("{base}/login"))
                .form(&[("name", "ada"), ("password", "wrong password")])
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (what, response) in &answers {
        assert_guarded(what, response.headers(), false);
        assert_eq!(
            header(response.headers(), "content-security-policy"),
            passage_server::guard::DEFAULT_POLICY,
            "{what} ({})",
            response.status()
        );
    }
    assert_eq!(answers[0].1.status(), 200);
    assert_eq!(answers[3].1.status(), 401);
    assert_eq!(answers[5].1.status(), 405);
    portal.shutdown(Duration::from_secs(10)).await.unwrap();

    // Served over TLS (an https:// public URL), every response also asks for nothing else.
    let mut config = common::config(dir.path(), &[]);
    config.vms.public_url = Some("https://portal.example".into());
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    for path in [
        "/",
        "/healthz",
        "/api/v1/hosts",
        "/pkg/passage.css",
        "/nothing",
    ] {
        let response = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_guarded(path, response.headers(), true);
        assert_eq!(
            header(response.headers(), "strict-transport-security"),
            "max-age=31536000"
        );
    }
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

/// Sends a request's head and the first `sent` bytes of a body of `length`, then waits for the
/// answer; returns it and how long it took.
async fn stalled_request(
    address: SocketAddr,
    head: &str,
    length: usize,
    sent: &[u8],
) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("{head}Content-Length: {length}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    stream.write_all(sent).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer))
        .await
        .expect("the portal answers instead of waiting for ever")
        .ok();
    (
        String::from_utf8_lossy(&answer).into_owned(),
        started.elapsed(),
    )
}

#[tokio::test]
async fn a_request_out_of_time_is_answered_and_uploads_are_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    config.http.request_timeout = Duration::from_secs(2);
    let admin = common::token_for(&config, "ops", true).await;
    let portal = Portal::start(config).await.unwrap();

    // A body that never comes: the request ends after its time with a 503 that says why.
    let (answer, took) = stalled_request(
        portal.address,
        "POST /api/v1/login HTTP/1.1\r\nHost: portal\r\nContent-Type: application/json\r\n",
        100,
        b"{\"name\": \"ops\",",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("did not finish within 2 s"), "{answer}");
    assert!(
        answer.contains("x-content-type-options: nosniff"),
        "{answer}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A plugin upload that keeps sending for twice the time limit is not cut: it is read to
    // its end and judged (these bytes are no plugin).
    let length = 8 * 4096;
    let started = Instant::now();
    let mut stream = TcpStream::connect(portal.address).await.unwrap();
    stream
        .write_all(
            format!(
                "POST /api/v1/plugins HTTP/1.1\r\nHost: portal\r\nAuthorization: Bearer {admin}\r\n\
                 Content-Type: application/wasm\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        stream.write_all(&[b'x'; 4096]).await.unwrap();
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(started.elapsed() > Duration::from_secs(3));
    assert!(answer.starts_with("HTTP/1.1 422"), "{answer}");
    assert!(answer.contains("not a WebAssembly component"), "{answer}");

    // An upload that stops sending is cut after the same time, idle.
    let (answer, took) = stalled_request(
        portal.address,
        &format!(
            "POST /api/v1/plugins HTTP/1.1\r\nHost: portal\r\nAuthorization: Bearer {admin}\r\n\
             Content-Type: application/wasm\r\n"
        ),
        4096,
        b"\0asm",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    config.http.request_timeout = Duration::from_secs(3);
    config.http.max_concurrent_requests = 2;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);

    // Two requests whose bodies never come hold both places until their time runs out.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(stalled_request(
                portal.address,
                "POST /api/v1/login HTTP/1.1\r\nHost: portal\r\nContent-Type: application/json\r\n",
                100,
                b"{",
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let busy = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once"
    );
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "1");
    assert_eq!(busy.headers()["x-content-type-options"], "nosniff");
    let body: serde_json::Value = busy.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    for request in slow {
        let (answer, _) = request.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    // The places are free again.
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
