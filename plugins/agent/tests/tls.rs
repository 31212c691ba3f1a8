//! `passage-agent serve` against an `https://` portal: the certificate is verified (a portal
//! signed by an unknown CA is refused), `--ca-file` adds an installation's own CA, and the token
//! never goes out over a connection that failed verification. The peer is Python's HTTPS server
//! with a certificate that a CA made for the test signed.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test's certificate authority and a server certificate it signed for 127.0.0.1.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let done = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed");
        assert!(done.success(), "openssl {args:?}");
    };
    let key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    let words = |line: String| -> Vec<String> { line.split(' ').map(String::from).collect() };
    let ca = words(format!(
        "req -x509 {key} -days 1 -subj /CN=passage-test-ca -keyout ca.key -out ca.pem"
    ));
    let request = words(format!(
        "req {key} -subj /CN=127.0.0.1 -keyout key.pem -out server.csr"
    ));
    openssl(&ca.iter().map(String::as_str).collect::<Vec<_>>());
    openssl(&request.iter().map(String::as_str).collect::<Vec<_>>());
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
}

/// An HTTPS server on loopback that answers every request 503 (as a portal that is starting
/// would) and writes each request line it got to `requests`.
struct TlsPeer {
    server: Child,
    port: u16,
}

const PEER: &str = r#"
import http.server, ssl, sys
class Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        with open("requests", "a") as log:
            log.write(self.requestline + " " + self.headers.get("Authorization", "") + "\n")
        self.send_response(503)
        self.end_headers()
    do_GET = do_POST
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Answer)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain("cert.pem", "key.pem")
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

impl TlsPeer {
    fn start(dir: &Path) -> TlsPeer {
        certificates(dir);
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = Command::new("python3")
            .args(["-c", PEER, &port.to_string()])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the TLS peer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsPeer { server, port }
    }
}

impl Drop for TlsPeer {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Starts `serve` against the peer.
fn agent(peer: &TlsPeer, extra: &[&std::ffi::OsStr]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_passage-agent"))
        .args([
            "serve",
            "--backend",
            "fake",
            "--token",
            "psa_secret_token_value",
        ])
        .arg("--server")
        .arg(format!("https://127.0.0.1:{}", peer.port))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The agent's first complaint while registering.
fn complaint(agent: &mut Child) -> String {
    let line = BufReader::new(agent.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("registering"))
        .unwrap_or_default();
    let _ = agent.kill();
    let _ = agent.wait();
    line
}

#[test]
fn an_https_portal_is_verified_and_an_own_ca_can_be_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let peer = TlsPeer::start(dir.path());
    let requests = || std::fs::read_to_string(dir.path().join("requests")).unwrap_or_default();

    // Signed by a CA the agent does not know: refused before anything is sent, and said so.
    let refused = complaint(&mut agent(&peer, &[]));
    assert!(refused.contains("certificate"), "{refused}");
    assert_eq!(requests(), "", "nothing may reach an unverified peer");

    // With the CA given, the request arrives over TLS, token and all, and the peer's answer
    // (503: try again later) is what the agent reports.
    let ca = dir.path().join("ca.pem");
    let answered = complaint(&mut agent(&peer, &["--ca-file".as_ref(), ca.as_os_str()]));
    assert!(answered.contains("503"), "{answered}");
    assert!(
        requests()
            .starts_with("POST /api/v1/agent/register HTTP/1.1 Bearer psa_secret_token_value"),
        "{}",
        requests()
    );
}
