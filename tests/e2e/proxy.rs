//! The PROXY protocol on the socket, TLS and HTTP listeners (the protocol reference's
//! "Behind a load balancer"): the header's client address is the connection's, and a
//! connection that does not start with a header is closed.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::harness::*;

fn v2_header(client: &str, port: u16) -> Vec<u8> {
    let ip: std::net::Ipv4Addr = client.parse().expect("ipv4");
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([0x21, 0x11, 0, 12]);
    h.extend(ip.octets());
    h.extend([10, 0, 0, 1]);
    h.extend(port.to_be_bytes());
    h.extend(5000u16.to_be_bytes());
    h
}

#[test]
fn a_v1_header_sets_remote_ip_and_port_on_the_socket_listener() {
    let srv = TestServer::with(|c| c.servers.socket.proxy_protocol = true);
    let mut raw = TcpStream::connect(srv.addr).expect("connect");
    raw.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 51234 5000\r\n")
        .expect("header");
    let mut c = Client::from_stream(raw);
    c.welcome = c.json();
    assert!(c.welcome["welcome"].is_string(), "{}", c.welcome);
    let details = ok_data(&c.request("detailsView"));
    assert_eq!(details["remoteIP"], "192.0.2.7");
    assert_eq!(details["remotePort"], 51234);
}

#[test]
fn a_v2_header_comes_before_the_tls_handshake() {
    let srv = TestServer::with(|c| {
        c.servers.socket_tls.enabled = true;
        c.servers.socket_tls.port = 0;
        c.servers.socket_tls.server_options = tls_options();
        c.servers.socket_tls.proxy_protocol = true;
    });
    let mut raw = TcpStream::connect(srv.tls_addr.expect("tls listener")).expect("connect");
    raw.write_all(&v2_header("198.51.100.9", 40000))
        .expect("header");
    let mut c = Client::tls_over(raw, client_tls(None));
    c.welcome = c.json();
    let details = ok_data(&c.request("detailsView"));
    assert_eq!(details["remoteIP"], "198.51.100.9");
    assert_eq!(details["remotePort"], 40000);
    // The plain listener next to it takes no header.
    let mut plain = srv.client();
    assert_eq!(
        ok_data(&plain.request("detailsView"))["remoteIP"],
        "127.0.0.1"
    );
}

#[test]
fn without_a_header_the_connection_is_closed_unwelcomed() {
    let srv = TestServer::with(|c| {
        c.servers.socket.proxy_protocol = true;
        c.servers.web.enabled = true;
        c.servers.web.port = 0;
        c.servers.web.proxy_protocol = true;
    });
    let mut raw = TcpStream::connect(srv.addr).expect("connect");
    raw.set_read_timeout(Some(GUARD)).expect("timeout");
    raw.write_all(b"detailsView\r\n").expect("write");
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got); // EOF or reset
    assert!(
        got.is_empty(),
        "no welcome: {}",
        String::from_utf8_lossy(&got)
    );
    // HTTP: a header, then a request; and a request without one.
    let web = srv.web_addr.expect("web");
    let mut ok = TcpStream::connect(web).expect("connect");
    ok.write_all(b"PROXY TCP4 192.0.2.8 10.0.0.1 40001 8080\r\nGET /status HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut text = String::new();
    ok.read_to_string(&mut text).expect("read");
    assert!(
        text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200"),
        "{text}"
    );
    let mut bad = TcpStream::connect(web).expect("connect");
    bad.set_read_timeout(Some(GUARD)).expect("timeout");
    bad.write_all(b"GET /status HTTP/1.0\r\n\r\n")
        .expect("write");
    let mut got = Vec::new();
    let _ = bad.read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    wait_until("both refusals counted", || srv.api.proxy_failures() == 2);
}
