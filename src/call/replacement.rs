//! A transfer the far end asked for (RFC 5589 §6): the new leg toward the REFER's target,
//! which replaces the transferor's when it answers, and the sipfrag NOTIFYs that tell the
//! transferor how it goes.

use std::sync::Arc;

use rsipstack::dialog::invite_dialog::InviteDialog;
use rsipstack::sip::Header;
use tokio::sync::mpsc;
use tracing::debug;

use super::sip_leg::SipLeg;
use super::transfer;
use super::Env;

/// After a transfer the far end asked for, how long the transferor has to send its BYE
/// (RFC 5589 §6.1) before we end the old dialog ourselves.
pub(super) const OLD_LEG_LINGER: std::time::Duration = std::time::Duration::from_secs(4);

/// A new leg toward the target of a REFER from the far end, replacing the current one when
/// it answers.
pub(super) struct Replacement {
    pub(super) leg: SipLeg,
    pub(super) target: String,
    /// The transferor already hung up: if the target fails, the call is over.
    pub(super) old_gone: bool,
    /// NOTIFYs for the transferor.
    pub(super) notifier: mpsc::UnboundedSender<ToTransferor>,
}

/// What the transferor is told (RFC 3515 §2.4.5 sipfrag NOTIFYs).
pub(super) enum ToTransferor {
    /// Provisional progress; the subscription stays active.
    Progress(u16),
    /// The target answered: final NOTIFY, then BYE if the transferor does not hang up.
    Succeeded,
    /// The target failed with this status: final NOTIFY; the old leg goes on.
    Failed(u16),
}

/// Sends the transferor's NOTIFYs one after the other, each after the previous one's
/// answer, so they arrive in order. Detached from the call: the old leg's goodbye must
/// finish even if the call ends meanwhile.
pub(super) fn spawn_notifier(
    dialog: InviteDialog,
    env: Arc<Env>,
) -> mpsc::UnboundedSender<ToTransferor> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // RFC 3515 lets the first NOTIFY overtake the 202, but transferors that expect the
        // 202 first are common: let it leave first.
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        while let Some(msg) = rx.recv().await {
            let (status, last) = match msg {
                ToTransferor::Progress(s) => (s, false),
                ToTransferor::Succeeded => (200, true),
                ToTransferor::Failed(s) => (s, true),
            };
            let state = if last {
                "terminated;reason=noresource"
            } else {
                "active;expires=60"
            };
            let headers = vec![
                Header::Event("refer".into()),
                Header::SubscriptionState(state.into()),
                Header::ContentType("message/sipfrag;version=2.0".into()),
            ];
            let body = transfer::sipfrag(status).into_bytes();
            if let Err(e) = dialog.notify(Some(headers), Some(body)).await {
                debug!(error = %e, "NOTIFY to the transferor failed");
            }
            if let ToTransferor::Succeeded = msg {
                tokio::time::sleep(OLD_LEG_LINGER).await;
                if !dialog.state().is_terminated() {
                    let _ = dialog.bye().await;
                }
                env.dialogs.remove_dialog(&dialog.id());
            }
            if last {
                break;
            }
        }
    });
    tx
}
