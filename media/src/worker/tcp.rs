//! The worker's side of ICE-TCP (see `crate::ice_tcp`): taking over a connection from the
//! acceptor, and feeding its frames to the call's browser leg exactly as UDP datagrams are
//! fed, with a path that names the connection so that replies and media go back on it.

use std::borrow::Cow;
use std::time::Instant;

use mio::Token;

use super::Worker;
use crate::ice_tcp::connections::{Connections, Fill, Owner};
use crate::ice_tcp::TcpHandoff;

impl Worker {
    /// A connection the acceptor routed here: the call is found by the first check's ufrag
    /// (the leg then authenticates the check itself, as for UDP).
    pub(super) fn adopt_tcp(&mut self, h: TcpHandoff, now: Instant) {
        let owner = self.by_ufrag.get(&h.ufrag).and_then(|&slot| {
            let call = self.calls.get(slot)?.as_ref()?;
            Some(Owner {
                slot,
                call: call.id,
            })
        });
        let Some(owner) = owner else {
            tracing::debug!(remote = %h.remote, "ICE-TCP connection refused: no call has its ufrag");
            return;
        };
        match self.browser.tcp.adopt(
            self.poll.registry(),
            h.stream,
            h.remote,
            h.local,
            h.rx,
            owner,
        ) {
            Ok((index, _)) => {
                tracing::debug!(remote = %h.remote, call = owner.call, "ICE-TCP connection adopted");
                // The first check is already buffered; the poll reports only what comes next.
                self.read_tcp(index, now);
                // The acceptor only read the ufrag, which is no secret; a check the leg did not
                // answer (wrong MESSAGE-INTEGRITY) must not keep a connection on the call.
                if !self.browser.tcp.answered(index) {
                    self.browser.tcp.close(
                        index,
                        self.poll.registry(),
                        "its first check was not answered",
                    );
                }
            }
            Err(e) => {
                tracing::warn!(remote = %h.remote, error = %e, "ICE-TCP connection refused")
            }
        }
    }

    /// A poll event on a connection.
    pub(super) fn on_tcp_event(&mut self, token: Token, readable: bool, writable: bool) {
        let Some(index) = Connections::index_of(token) else {
            return;
        };
        if writable {
            self.browser.tcp.on_writable(index);
        }
        if readable {
            self.read_tcp(index, Instant::now());
        }
    }

    fn owns(&self, owner: Owner) -> bool {
        self.calls
            .get(owner.slot)
            .and_then(Option::as_ref)
            .is_some_and(|c| c.id == owner.call)
    }

    /// Reads everything the connection has and hands each frame to its call. Bad framing, or
    /// a call that ended, closes this connection only.
    fn read_tcp(&mut self, index: usize, now: Instant) {
        let Some((path, owner)) = self.browser.tcp.path(index) else {
            return;
        };
        let Some(mut rx) = self.browser.tcp.take_rx(index) else {
            return;
        };
        let mut frames = 0u64;
        let end: Option<Cow<'static, str>> = 'read: loop {
            let fill = self.browser.tcp.fill(index, &mut rx);
            // Frames that arrived before a close still count.
            loop {
                match rx.pop() {
                    Ok(Some(frame)) => {
                        if !self.owns(owner) {
                            break 'read Some("the call ended".into());
                        }
                        self.on_leg_datagram(owner.slot, frame, path, now);
                        frames += 1;
                    }
                    Ok(None) => break,
                    Err(e) => break 'read Some(format!("bad framing: {e}").into()),
                }
            }
            match fill {
                Fill::Full => continue,
                Fill::Drained => break None,
                Fill::Closed => break Some("closed by the browser".into()),
                Fill::Failed(e) => break Some(format!("read failed: {e}").into()),
            }
        };
        crate::stats::RELAY_LATENCY.record(now.elapsed(), frames);
        match end {
            None => self.browser.tcp.put_rx(index, rx),
            Some(why) => self.browser.tcp.close(index, self.poll.registry(), &why),
        }
    }
}
