//! A Rust chat peer: connects with [`sealcast::client::Client`] (pinned key, wsenc/1), joins a room and answers
//! every `chat` message there with an echo, until a `bye`. The JavaScript client's cross-implementation test
//! (`clients/js/test/interop.test.mjs`) talks to it through a real server.
//!
//! ```sh
//! cargo run --example chat_peer -- ws://127.0.0.1:8080/ws <token> <server publicKey> <room> [records per epoch]
//! ```
//!
//! Prints `joined <connection id>`, then `got <data>` per chat message, then `bye`.

use std::process::ExitCode;
use std::time::Duration;

use sealcast::client::{Client, ClientConfig};
use sealcast::crypto::PinnedKey;
use serde_json::json;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, token, public_key, room, rest @ ..] = args.as_slice() else {
        eprintln!("usage: chat_peer <url> <token> <server publicKey> <room> [records per epoch]");
        return ExitCode::from(2);
    };
    let epoch_limit = rest.first().and_then(|s| s.parse().ok()).unwrap_or(1 << 20);
    let run = run(url, token, public_key, room, epoch_limit);
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("chat_peer: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("chat_peer: timed out");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    url: &str,
    token: &str,
    public_key: &str,
    room: &str,
    epoch_limit: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = ClientConfig::new(url, token)
        .pin(PinnedKey::from_b64u(public_key)?)
        .max_records_per_epoch(epoch_limit);
    let mut client = Client::connect(config).await?;
    client.join(&[room]).await?;
    println!("joined {}", client.id());
    let mut n = 0u64;
    loop {
        let msg = client.recv().await?;
        match msg.event.as_str() {
            "chat" => {
                println!("got {}", msg.data);
                let text = msg.data["text"].as_str().unwrap_or_default();
                let reply = json!({ "from": "rust", "text": format!("echo: {text}"), "n": n });
                client.publish(room, "chat", &reply).await?;
                n += 1;
            }
            "bye" => {
                client
                    .publish(room, "bye", &json!({ "from": "rust", "echoed": n }))
                    .await?;
                println!("bye");
                client.close().await;
                return Ok(());
            }
            "error" => return Err(format!("server error: {}", msg.data).into()),
            _ => {}
        }
    }
}
