//! Events to containerd, in the order they were made: one queue, one sender. A process's exit
//! goes out through [`Events::exit`], the same for the init and an exec, under the process's
//! lifecycle lock (the one its start is published under), after its output is drained.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::protos::events::task::TaskExit;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::Context;
use log::{error, info, warn};
use tokio::sync::mpsc;

use super::process::Process;

/// How long an exit waits for its output to drain before it is published anyway.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);

type Event = (&'static str, Box<dyn MessageDyn>);

#[derive(Clone)]
pub struct Events {
    queue: mpsc::UnboundedSender<Event>,
}

impl Events {
    /// Events for `namespace`, sent to containerd through `publisher` in order.
    pub fn to_publisher(namespace: &str, publisher: RemotePublisher) -> Events {
        let (events, mut rx) = Events::channel();
        let namespace = namespace.to_string();
        tokio::spawn(async move {
            while let Some((topic, event)) = rx.recv().await {
                if let Err(e) = publisher
                    .publish(Context::default(), topic, &namespace, event)
                    .await
                {
                    error!("publish {topic}: {e}");
                }
            }
        });
        events
    }

    /// Events and the receiving end of their queue.
    pub fn channel() -> (Events, mpsc::UnboundedReceiver<Event>) {
        let (queue, rx) = mpsc::unbounded_channel();
        (Events { queue }, rx)
    }

    pub fn publish(&self, topic: &'static str, event: Box<dyn MessageDyn>) {
        if self.queue.send((topic, event)).is_err() {
            warn!("event queue closed, dropped {topic}");
        }
    }

    /// Records and publishes the exit of `process` of container `container_id` (once: a second
    /// report of the same exit is dropped).
    pub async fn exit(&self, container_id: &str, process: &Process, code: u32, at: SystemTime) {
        process.io.wait_output(OUTPUT_DRAIN).await;
        let _guard = process.lifecycle.lock().await;
        let pid = process.pid();
        if !process.record_exit(code, at) {
            return;
        }
        let id = if process.exec_id.is_empty() {
            info!("{container_id}: init {pid} exited with {code}");
            container_id
        } else {
            &process.exec_id
        };
        self.publish(
            topics::TASK_EXIT_EVENT_TOPIC,
            Box::new(TaskExit {
                container_id: container_id.to_string(),
                id: id.to_string(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            }),
        );
    }
}

/// A protobuf timestamp of `t`.
pub fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}
