//! The streaming side of CRI `Exec`: the URL the CRI plugin returns is served by its streaming
//! server (the kubelet's `remotecommand` protocol). This client speaks its WebSocket variant
//! (`v4.channel.k8s.io`): every binary frame starts with a channel byte (0 stdin, 1 stdout,
//! 2 stderr, 3 error/status as a JSON `metav1.Status`).

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const PROTOCOL: &str = "v4.channel.k8s.io";

#[derive(Debug, Default)]
pub struct StreamResult {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The exit code from the status channel (0 for `Success`).
    pub exit_code: i32,
    /// The raw status JSON.
    pub status: String,
}

/// Connects to `url` (an `http://` URL from Exec), sends `stdin` (if any) on channel 0, and
/// collects output until the server closes the stream.
pub async fn run(url: &str, stdin: Option<&[u8]>) -> Result<StreamResult> {
    let ws_url = url
        .strip_prefix("http://")
        .map(|rest| format!("ws://{rest}"))
        .ok_or_else(|| anyhow!("Exec URL {url} is not http://"))?;
    let mut request = ws_url.as_str().into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", PROTOCOL.parse()?);
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("websocket connect to {ws_url}"))?;
    let negotiated = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if negotiated != PROTOCOL {
        bail!("streaming server chose protocol {negotiated:?}, expected {PROTOCOL}");
    }
    if let Some(data) = stdin {
        let mut frame = vec![0u8];
        frame.extend_from_slice(data);
        ws.send(Message::Binary(frame.into())).await?;
    }
    let mut result = StreamResult::default();
    let mut got_status = false;
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(m) => m,
            // The server may drop the connection right after the status frame.
            Err(_) if got_status => break,
            Err(e) => return Err(e.into()),
        };
        let data: Vec<u8> = match msg {
            Message::Binary(b) => b.to_vec(),
            Message::Text(t) => t.as_bytes().to_vec(),
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&channel, payload)) = data.split_first() else {
            continue;
        };
        match channel {
            1 => result.stdout.extend_from_slice(payload),
            2 => result.stderr.extend_from_slice(payload),
            3 if !payload.is_empty() => {
                got_status = true;
                result.status = String::from_utf8_lossy(payload).into_owned();
                result.exit_code = exit_code_of(&result.status)?;
            }
            _ => {}
        }
    }
    if !got_status {
        bail!("stream closed without a status frame");
    }
    Ok(result)
}

/// Exit code from a `metav1.Status`: 0 on Success; `NonZeroExitCode` carries it in a cause.
fn exit_code_of(status: &str) -> Result<i32> {
    let v: serde_json::Value = serde_json::from_str(status)?;
    if v.get("status").and_then(|s| s.as_str()) == Some("Success") {
        return Ok(0);
    }
    v.pointer("/details/causes")
        .and_then(|c| c.as_array())
        .and_then(|causes| {
            causes
                .iter()
                .find(|c| c.get("reason").and_then(|r| r.as_str()) == Some("ExitCode"))
        })
        .and_then(|c| c.get("message")?.as_str()?.parse().ok())
        .ok_or_else(|| anyhow!("exec failed: {status}"))
}
