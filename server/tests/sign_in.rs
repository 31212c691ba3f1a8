//! Password guessing, as an attacker would try it: many guesses at once, guesses from one
//! address meant to lock a user out everywhere, and a forged `X-Forwarded-For`.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use passage_server::Portal;
use passage_server::auth::{Auth, AuthError};
use passage_server::config::{IpRange, LoginSettings};
use passage_server::store::Store;
use reqwest::StatusCode;

const PASSWORD: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guesses_sent_at_once_are_counted_before_they_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.path().join("p.db").display()))
        .await
        .unwrap();
    let settings = LoginSettings {
        max_failures: 5,
        max_failures_per_address: 100,
        window_secs: 600,
        concurrent_hashes: 2,
    };
    let auth = Auth::with_settings(store.clone(), settings);
    auth.add_user("ada", PASSWORD, false).await.unwrap();
    let before = auth.password_checks();

    let client: IpAddr = "198.51.100.7".parse().unwrap();
    let guesses: Vec<_> = (0..40)
        .map(|i| {
            let auth = auth.clone();
            tokio::spawn(async move { auth.login("ada", &format!("guess {i}"), client).await })
        })
        .collect();
    let (mut wrong, mut limited) = (0, 0);
    for guess in guesses {
        match guess.await.unwrap() {
            Err(AuthError::WrongCredentials) => wrong += 1,
            Err(AuthError::RateLimited(_)) => limited += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((wrong, limited), (5, 35));
    assert_eq!(
        auth.password_checks() - before,
        5,
        "only five guesses were checked"
    );
    assert!(auth.peak_concurrent_hashes() <= 2);

    // Argon2 work stays bounded also when many clients sign in at once.
    let many: Vec<_> = (0..12)
        .map(|i| {
            let auth = auth.clone();
            let client: IpAddr = format!("203.0.113.{i}").parse().unwrap();
            tokio::spawn(async move { auth.login("ada", PASSWORD, client).await })
        })
        .collect();
    for login in many {
        login.await.unwrap().unwrap();
    }
    assert!(
        auth.peak_concurrent_hashes() <= 2,
        "{}",
        auth.peak_concurrent_hashes()
    );
    store.close().await;
}

fn from(address: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(address.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn login(
    client: &reqwest::Client,
    base: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> StatusCode {
    let mut request = client
        .post(format!("{base}/api/v1/login"))
        .json(&serde_json::json!({ "name": "ada", "password": password }));
    if let Some(forwarded) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded);
    }
    request.send().await.unwrap().status()
}

#[tokio::test]
async fn guesses_from_one_address_lock_only_that_address_out() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(dir.path(), &[]);
    common::token_for(&config, "ada", false).await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);

    // Thirty guesses at once from one address: ten are checked, the rest refused unchecked.
    let attacker = from("127.0.0.2");
    let guesses: Vec<String> = (0..30).map(|i| format!("guess {i}")).collect();
    let statuses =
        futures_util::future::join_all(guesses.iter().map(|g| login(&attacker, &base, g, None)))
            .await;
    let wrong = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((wrong, limited), (10, 20), "{statuses:?}");
    assert_eq!(
        login(&attacker, &base, PASSWORD, None).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the attacker's address waits, even with the right password"
    );

    // Ada, elsewhere, signs in as ever.
    let ada = from("127.0.0.3");
    assert_eq!(login(&ada, &base, PASSWORD, None).await, StatusCode::OK);
    assert_eq!(
        login(&ada, &base, "a typo in it", None).await,
        StatusCode::UNAUTHORIZED
    );

    // A forged X-Forwarded-For from a peer that is no trusted proxy changes nothing.
    let forger = from("127.0.0.4");
    for i in 0..10 {
        let status = login(&forger, &base, "guess", Some(&format!("192.0.2.{i}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login(&forger, &base, "guess", Some("192.0.2.200")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "every forged address counted as the peer's"
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::config(dir.path(), &[]);
    config.http.trusted_proxies = vec![IpRange::parse("127.0.0.5").unwrap()];
    common::token_for(&config, "ada", false).await;
    let portal = Portal::start(config).await.unwrap();
    let base = format!("http://{}", portal.address);
    let proxy = from("127.0.0.5");

    for _ in 0..10 {
        let status = login(&proxy, &base, "guess", Some("198.51.100.7")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login(&proxy, &base, PASSWORD, Some("198.51.100.7")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy is not locked out, and neither is the proxy's own
    // address: a client cannot hide behind an address it writes itself left of the real one.
    assert_eq!(
        login(&proxy, &base, PASSWORD, Some("203.0.113.9")).await,
        StatusCode::OK
    );
    assert_eq!(
        login(&proxy, &base, PASSWORD, Some("198.51.100.7, 203.0.113.10")).await,
        StatusCode::OK
    );
    // A peer that is not the proxy is its own client, whatever it claims.
    assert_eq!(
        login(&from("127.0.0.6"), &base, PASSWORD, Some("198.51.100.7")).await,
        StatusCode::OK
    );
    portal.shutdown(Duration::from_secs(10)).await.unwrap();
}
