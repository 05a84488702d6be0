//! The protocol reference's "Ending": ending connections and graceful shutdown.

use std::net::TcpStream;

use crate::harness::*;

both! {
    fn client_eof_is_dropped_silently_after_its_replies(t) {
        let srv = TestServer::over(t);
        let mut c = srv.client();
        c.send("paramsView");
        c.shutdown_write();
        assert_eq!(
            c.json()["messageCount"],
            1,
            "lines read before EOF are answered"
        );
        c.expect_closed();
    }
}

both! {
    fn shutdown_delivers_pending_replies_then_bye(t) {
        let srv = TestServer::over(t);
        let mut busy = srv.client();
        let mut idle = srv.client();
        busy.send(r#"{"action":"sleepTest","params":{"sleepDuration":1500}}"#);
        assert_eq!(ok_data(&busy.request("detailsView"))["pendingActions"], 1);
        srv.begin_shutdown();
        // A connection with nothing pending gets the Bye line at once.
        assert_eq!(idle.line(), r#"{"status":"Bye!","context":"api"}"#);
        idle.expect_closed();
        // Listeners are closed: new connections are refused.
        assert!(TcpStream::connect(srv.addr).is_err(), "listener closed");
        // New actions are refused meanwhile; verbs still work.
        let r = busy.request("randomNumber");
        assert_eq!(error_text(&r), "the server is shutting down");
        assert_eq!(r["messageCount"], 3);
        assert_eq!(
            ok_data(&busy.request("paramsView"))["action"],
            "randomNumber"
        );
        // The pending reply, then Bye, then close.
        let reply = busy.json();
        assert_eq!(reply["messageCount"], 1);
        assert_eq!(reply["sleepDuration"], 1500);
        assert_eq!(busy.line(), r#"{"status":"Bye!","context":"api"}"#);
        busy.expect_closed();
        srv.stop();
    }
}

#[test]
fn shutdown_grace_bounds_the_wait() {
    let srv = TestServer::with(|c| c.general.pending_shutdown_wait_limit = 200);
    let mut c = srv.client();
    c.send(r#"{"action":"sleepTest","params":{"sleepDuration":30000}}"#);
    assert_eq!(ok_data(&c.request("detailsView"))["pendingActions"], 1);
    srv.stop();
    // The loop stopped after the grace; the connection was closed without the reply.
    c.expect_closed();
}
