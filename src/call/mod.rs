//! The B2BUA: one call = a browser leg + a SIP leg + their media, owned by one task
//! (`driver.rs`), whose decisions come from the sans-IO [`state::CallState`].
//!
//! The layer sees the gateway through [`Env`]: the SIP user agent, the media plane, the
//! shared tables and the configuration; nothing of the WebSocket or REST servers above it.

mod agent;
pub mod click_to_dial;
pub mod driver;
pub mod reliable;
pub mod remote_control;
mod replacement;
pub mod session_timer;
mod sip_leg;
pub mod state;
pub mod transfer;

use std::sync::Arc;

use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::sip::StatusCode;
use rsipstack::transaction::transaction::Transaction;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::directory::Directory;
use crate::sip::ua::SipUa;

/// What calls need of the running gateway.
pub struct Env {
    /// Configuration.
    pub cfg: Arc<Config>,
    /// The shared tables.
    pub directory: Arc<Directory>,
    /// The SIP user agent.
    pub ua: Arc<SipUa>,
    /// INVITE dialogs (the UA's dialog layer).
    pub dialogs: Arc<DialogLayer>,
    /// The media plane.
    pub media: Arc<media::engine::MediaEngine>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
}

/// Routes an initial INVITE to the agent whose DN is the Request-URI's user: a call for a
/// registered agent, 486 when `--max-ringing-per-dn` calls ring it already, 480 for a DN with
/// no live registration, 404 for a DN we do not know, 503 once the gateway is shutting down.
pub fn route_invite(env: &Arc<Env>, mut tx: Transaction) {
    let dn = tx.original.uri.user().unwrap_or_default().to_string();
    if env.shutdown.is_cancelled() {
        // Stopping: no new calls (RFC 3261 §21.5.4).
        tracing::info!(%dn, "incoming INVITE while shutting down: 503");
        tokio::spawn(async move {
            let _ = tx.reply(StatusCode::ServiceUnavailable).await;
        });
        return;
    }
    match env.directory.registry.agent(&dn) {
        Some(link) => {
            let id = format!("{:032x}", rand::random::<u128>());
            let limit = env.cfg.limits.max_ringing_per_dn;
            match crate::directory::calls::Calls::offer(&env.directory, &dn, &id, limit) {
                Some(offered) => driver::spawn_incoming(env.clone(), tx, dn, link.inbox, offered),
                None => {
                    tracing::info!(%dn, limit, "incoming INVITE while the DN already rings that often: 486");
                    crate::metrics::get().sip_refused("ringing_limit");
                    tokio::spawn(async move {
                        let _ = tx.reply(StatusCode::BusyHere).await;
                    });
                }
            }
        }
        None => {
            let status = if env.directory.registry.get(&dn).is_some() {
                StatusCode::TemporarilyUnavailable
            } else {
                StatusCode::NotFound
            };
            tracing::info!(%dn, status = status.code(), "incoming INVITE for no registered agent");
            tokio::spawn(async move {
                let _ = tx.reply(status).await;
            });
        }
    }
}
