//! TLS: with a certificate configured the gateway serves `wss://` and `https://`.

use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use topgun_tests::ws_client::decode;
use topgun_tests::TestServer;

struct Tls {
    _dir: tempfile::TempDir,
    cert_path: String,
    key_path: String,
    cert: CertificateDer<'static>,
}

fn self_signed() -> Tls {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).expect("write cert");
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).expect("write key");
    Tls {
        cert_path: cert_path.to_string_lossy().into_owned(),
        key_path: key_path.to_string_lossy().into_owned(),
        cert: certified.cert.der().clone(),
        _dir: dir,
    }
}

async fn connect(
    port: u16,
    cert: &CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).expect("trust the test certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("tcp connect");
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake with the gateway")
}

#[tokio::test]
async fn wss_and_https_work_with_a_self_signed_certificate() {
    let tls = self_signed();
    let server = TestServer::start(&[
        ("TOPGUN_TLS_CERT", tls.cert_path.clone()),
        ("TOPGUN_TLS_KEY", tls.key_path.clone()),
    ])
    .await;

    let stream = connect(server.port, &tls.cert).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/ws", server.port), stream)
            .await
            .expect("websocket over TLS");
    use futures::StreamExt;
    let first = ws.next().await.expect("a frame").expect("no error");
    assert_eq!(decode(&first.into_data())["type"], "AUTH_REQUIRED");

    let mut stream = connect(server.port, &tls.cert).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"state\":\"ready\""), "{response}");

    // Plain TCP without TLS gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .expect("tcp");
    plain
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        plain.read_to_end(&mut buf),
    )
    .await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}

#[tokio::test]
async fn a_bad_certificate_path_is_a_clear_startup_error() {
    let out = tokio::process::Command::new(topgun_tests::bin_path("test-server"))
        .args(["--port", "0"])
        .env("TOPGUN_TLS_CERT", "/nonexistent/cert.pem")
        .env("TOPGUN_TLS_KEY", "/nonexistent/key.pem")
        .output()
        .await
        .expect("run test-server");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read certificate /nonexistent/cert.pem"),
        "{stderr}"
    );
}
