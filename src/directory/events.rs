//! The live event bus behind `/api/events`: what calls and registrations publish, for
//! whoever listens.

use std::sync::Arc;

use tokio::sync::broadcast;

/// Events one `/api/events` subscriber may fall behind by before it is dropped: a slow
/// reader must never slow the gateway, and memory per subscriber stays bounded.
pub const EVENT_BACKLOG: usize = 1024;

/// A live event: its `type` (the SSE `event:` name) and its JSON (`data:`).
#[derive(Clone, Debug)]
pub struct LiveEvent {
    /// `registrationState`, `ringing`, `answered`, `hangup`, …
    pub kind: String,
    /// The JSON object, with `type` in it.
    pub data: Arc<str>,
}

/// One broadcast ring for every subscriber.
pub struct EventBus {
    tx: broadcast::Sender<LiveEvent>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            tx: broadcast::channel(EVENT_BACKLOG).0,
        }
    }
}

impl EventBus {
    /// Publishes a live event (nobody listening is fine). `payload` must be a JSON object; it
    /// gets `type: kind` added.
    pub fn publish(&self, kind: &str, mut payload: serde_json::Value) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        if let Some(o) = payload.as_object_mut() {
            o.insert("type".into(), serde_json::Value::from(kind));
        }
        let _ = self.tx.send(LiveEvent {
            kind: kind.to_string(),
            data: payload.to_string().into(),
        });
    }

    /// A new subscriber, from the next event on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_get_typed_json_and_nobody_listening_is_fine() {
        let bus = EventBus::default();
        bus.publish("answered", serde_json::json!({ "callId": "c1" }));
        let mut rx = bus.subscribe();
        bus.publish(
            "hangup",
            serde_json::json!({ "callId": "c1", "by": "local" }),
        );
        let ev = rx.try_recv().expect("one event");
        assert_eq!(ev.kind, "hangup");
        let v: serde_json::Value = serde_json::from_str(&ev.data).expect("JSON");
        assert_eq!(v["type"], "hangup");
        assert_eq!(v["callId"], "c1");
        assert!(
            rx.try_recv().is_err(),
            "the event before subscribing is not replayed"
        );
    }
}
