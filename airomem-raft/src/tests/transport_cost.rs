//! What one call costs on each candidate transport, for the choice recorded in `DESIGN.md`
//! ("Why plain TCP with our own frames, not HTTP"). Not a test of behaviour: ignored, run by
//! hand in release and read the figures:
//!
//! ```sh
//! cargo test --release -p airomem-raft --lib transport_cost -- --ignored --nocapture
//! ```
//!
//! Both candidates carry the same postcard payload of about 200 bytes over loopback, one call
//! at a time on one kept-alive connection, and echo it back: the round trip is the cost.

use std::time::{Duration, Instant};

use tokio::io::{BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use crate::wire::frame::{self, DEFAULT_MAX_FRAME, Frame};

const CALLS: u32 = 20_000;

fn payload() -> Vec<u8> {
    (0..200u32).map(|i| (i * 7) as u8).collect()
}

async fn frames() -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accepts");
        stream.set_nodelay(true).expect("nodelay");
        let (r, w) = stream.into_split();
        let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
        while let Ok(Some(frame)) = frame::read_frame(&mut r, DEFAULT_MAX_FRAME).await {
            frame::write_frame(&mut w, &frame).await.expect("echoes");
        }
    });
    let stream = TcpStream::connect(addr).await.expect("connects");
    stream.set_nodelay(true).expect("nodelay");
    let (r, w) = stream.into_split();
    let (mut r, mut w) = (BufReader::new(r), BufWriter::new(w));
    let start = Instant::now();
    for id in 0..u64::from(CALLS) {
        frame::write_frame(&mut w, &Frame { kind: 1, id, payload: payload() }).await.expect("sends");
        let echoed = frame::read_frame(&mut r, DEFAULT_MAX_FRAME).await.expect("reads").expect("a frame");
        assert_eq!(echoed.id, id);
    }
    start.elapsed() / CALLS
}

async fn http() -> Duration {
    let app = axum::Router::new().route("/call", axum::routing::post(|body: axum::body::Bytes| async move { body }));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("an address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serves") });
    let client = reqwest::Client::builder().tcp_nodelay(true).build().expect("a client");
    let url = format!("http://{addr}/call");
    let start = Instant::now();
    for _ in 0..CALLS {
        let answer = client.post(&url).body(payload()).send().await.expect("sends");
        let body = answer.bytes().await.expect("reads");
        assert_eq!(body.len(), 200);
    }
    start.elapsed() / CALLS
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand in release (see the module docs)"]
async fn transport_cost() {
    // Warm both up once, then measure.
    let _warm = (frames().await, http().await);
    let (framed, posted) = (frames().await, http().await);
    eprintln!("one call, loopback, 200-byte payload, {CALLS} calls each:");
    eprintln!("  length-prefixed frames over TCP: {framed:?} per round trip");
    eprintln!("  HTTP/1.1 POST (axum + reqwest):  {posted:?} per round trip");
}
