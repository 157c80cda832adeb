//! One task per connected charger.
//!
//! The task owns the socket. It handles the charger's CALLs strictly one after
//! another (the next frame is read only once the previous one is answered),
//! sends the server's commands one at a time (the next only after an answer
//! or the call timeout), pings an idle charger and closes one that stopped
//! answering, and leaves when the server shuts down or a newer connection of
//! the same charger replaces it (on this node or, with several nodes, on
//! another: then the connection is fenced and handles and answers nothing
//! more, see `crate::cluster`).

use super::handlers::ChargerContext;
use super::registry::{Attachment, Command};
use super::CommandError;
use crate::ocpp::frame::{self, Frame, FrameError};
use crate::ocpp::schema::{self, Receiver};
use crate::ocpp::time::now_ms;
use crate::ocpp::{Call, CallError, ErrorCode};
use crate::state::AppState;
use crate::store::{Direction, NewLogEntry, RegistrationStatus};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

/// The server's CALL waiting for its answer.
struct Pending {
    message_id: String,
    action: String,
    reply: tokio::sync::oneshot::Sender<Result<Value, CommandError>>,
    deadline: Instant,
}

/// `at_handshake` is the charger's registration as the handshake read it,
/// for when the record cannot be read again here.
pub async fn serve(
    socket: WebSocket,
    state: AppState,
    attachment: Attachment,
    at_handshake: Option<RegistrationStatus>,
) {
    let span = tracing::info_span!("charger", charger = %attachment.charger_id);
    // Boxed so the reading of the charger record (a database query) does not
    // size the task that then idles for hours.
    Box::pin(Connection::new(socket, state, attachment, at_handshake))
        .await
        .run()
        .instrument(span)
        .await
}

struct Connection {
    socket: WebSocket,
    state: AppState,
    attachment: Attachment,
    context: ChargerContext,
    pending: Option<Pending>,
    last_heard: Instant,
    next_message_id: u64,
    /// When a charger that reconnected already accepted, without booting,
    /// is brought up to date (see [`RECONNECT_SYNC_GRACE`]).
    sync_due: Option<Instant>,
}

/// How long a charger that reconnects already accepted has to send its
/// BootNotification before it is sent its charging profiles and local list
/// anyway: a charger that rebooted boots first, and is brought up to date
/// once that answer is out; one that only lost its connection may not boot.
const RECONNECT_SYNC_GRACE: Duration = Duration::from_secs(2);

enum Exit {
    Closed,
    Replaced,
    ShuttingDown,
    Unresponsive,
    Failed,
}

impl Connection {
    async fn new(
        socket: WebSocket,
        state: AppState,
        attachment: Attachment,
        at_handshake: Option<RegistrationStatus>,
    ) -> Self {
        let charger_id = attachment.charger_id.clone();
        // A charger accepted before may skip BootNotification after a
        // reconnect; one that was never accepted must boot first. Read again
        // now that the connection it replaces (if any) has finished: its last
        // BootNotification may have changed it. If the database cannot say
        // (a pool exhausted by a reconnect storm), what the handshake read a
        // moment ago stands, rather than sending an accepted charger back to
        // boot.
        let registration = match state.store.charger(&charger_id).await {
            Ok(record) => record.map(|c| c.registration_status),
            Err(e) => {
                tracing::warn!(
                    "could not read charger record again, keeping the handshake's: {e:#}"
                );
                at_handshake
            }
        };
        let sync_due = (registration == Some(RegistrationStatus::Accepted))
            .then(|| Instant::now() + RECONNECT_SYNC_GRACE);
        let context = ChargerContext::new(charger_id, state.clone(), registration);
        Connection {
            socket,
            state,
            attachment,
            context,
            pending: None,
            last_heard: Instant::now(),
            next_message_id: 1,
            sync_due,
        }
    }

    async fn run(mut self) {
        tracing::info!(
            connection = self.attachment.connection_id,
            "charger connected"
        );
        let connected = serde_json::json!({ "chargerId": self.attachment.charger_id });
        // Boxed: the task of an idle charger keeps only what waiting takes.
        Box::pin(crate::webhooks::enqueue(
            &self.state.store,
            &self.state.config,
            "charger.connected",
            connected.clone(),
        ))
        .await;
        self.state
            .engine
            .events()
            .publish("charger.connected", None, connected);
        let mut shutdown = self.state.shutdown.clone();
        let ping_every = self.state.config.ws_ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let replaced = self.attachment.replaced.clone();
        let exit = loop {
            // One timer for both: the outstanding CALL's deadline and the
            // reconnect grace (an idle charger's task stays small).
            let deadline = match (self.pending.as_ref().map(|p| p.deadline), self.sync_due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            tokio::select! {
                biased;
                _ = stopping(&mut shutdown) => break Exit::ShuttingDown,
                _ = replaced.notified() => break Exit::Replaced,
                incoming = self.socket.next() => match incoming {
                    Some(Ok(message)) => {
                        self.last_heard = Instant::now();
                        match message {
                            Message::Text(_) if self.attachment.is_fenced() => break Exit::Replaced,
                            Message::Text(text) => {
                                // Boxed, as everything this loop awaits: the
                                // task of an idle charger holds only what
                                // waiting takes, not the deep futures of
                                // handling a message (engine, store).
                                if Box::pin(self.on_text(text.as_str())).await.is_err() {
                                    break Exit::Failed;
                                }
                            }
                            Message::Binary(_) => tracing::warn!("binary frame ignored: OCPP-J is text"),
                            Message::Close(_) => break Exit::Closed,
                            Message::Ping(_) | Message::Pong(_) => {}
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!("websocket error: {e}");
                        break Exit::Failed;
                    }
                    None => break Exit::Closed,
                },
                Some(outgoing) = self.attachment.commands.recv(), if self.pending.is_none() => {
                    if Box::pin(self.send_call(outgoing)).await.is_err() {
                        break Exit::Failed;
                    }
                }
                _ = sleep_until_opt(deadline) => {
                    let now = Instant::now();
                    if let Some(p) = self.pending.take_if(|p| p.deadline <= now) {
                        tracing::warn!(action = %p.action, message_id = %p.message_id, "charger did not answer in time");
                        let _ = p.reply.send(Err(CommandError::Timeout));
                    }
                    if self.sync_due.is_some_and(|due| due <= now) {
                        self.sync_due = None;
                        // Unless a BootNotification meanwhile left it Pending.
                        if self.context.registration == Some(RegistrationStatus::Accepted) {
                            self.bring_up_to_date();
                        }
                    }
                }
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > ping_every * 2 {
                        break Exit::Unresponsive;
                    }
                    if Box::pin(self.socket.send(Message::Ping(Default::default()))).await.is_err() {
                        break Exit::Failed;
                    }
                }
            }
        };
        Box::pin(self.finish(exit)).await;
    }

    async fn finish(mut self, exit: Exit) {
        let (code, reason) = match exit {
            Exit::Replaced => (1000, "replaced by a new connection"),
            Exit::ShuttingDown => (1001, "central system shutting down"),
            Exit::Unresponsive => (1001, "no answer to ping"),
            Exit::Closed | Exit::Failed => (1000, ""),
        };
        if !matches!(exit, Exit::Closed | Exit::Failed) {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
        if let Some(p) = self.pending.take() {
            let _ = p.reply.send(Err(CommandError::ConnectionLost));
        }
        // Commands still queued are answered by their dropped reply channels.
        self.attachment.commands.close();
        while let Ok(o) = self.attachment.commands.try_recv() {
            let _ = o.reply.send(Err(CommandError::ConnectionLost));
        }
        // The other nodes hear it first: a node taking the charger over
        // waits for this.
        self.state.registry.detach(&self.attachment).await;
        if let Err(e) = self
            .state
            .engine
            .charger_seen(&self.attachment.charger_id, now_ms())
            .await
        {
            tracing::warn!("could not record the disconnect: {e:#}");
        }
        let reason = match exit {
            Exit::Closed => "closed by charger",
            Exit::Replaced => "replaced",
            Exit::ShuttingDown => "shutdown",
            Exit::Unresponsive => "unresponsive",
            Exit::Failed => "socket error",
        };
        tracing::info!(reason, "charger disconnected");
        let disconnected =
            serde_json::json!({ "chargerId": self.attachment.charger_id, "reason": reason });
        Box::pin(crate::webhooks::enqueue(
            &self.state.store,
            &self.state.config,
            "charger.disconnected",
            disconnected.clone(),
        ))
        .await;
        self.state
            .engine
            .events()
            .publish("charger.disconnected", None, disconnected);
    }

    async fn send_text(&mut self, text: String) -> Result<(), axum::Error> {
        self.socket.send(Message::Text(text.into())).await
    }

    /// Queues a frame for the message log. It waits only when the log is
    /// far behind: frames are never dropped. The future owns what it needs
    /// (the connection, which holds the socket, is not shared across it).
    fn log(
        &self,
        direction: Direction,
        message_type: i64,
        message_id: &str,
        action: Option<&str>,
        payload: &str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let store = self.state.store.clone();
        let entry = NewLogEntry {
            charger_id: self.attachment.charger_id.clone(),
            direction,
            message_type,
            message_id: message_id.to_owned(),
            action: action.map(str::to_owned),
            payload: payload.to_owned(),
            logged_at: now_ms(),
        };
        async move { store.log_message(entry).await }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), axum::Error> {
        match frame::parse(text) {
            Ok(Frame::Call(call)) => {
                let received = std::time::Instant::now();
                self.log(Direction::In, 2, &call.id, Some(&call.action), text)
                    .await;
                let answer = self.answer(&call).await;
                let out = match &answer {
                    Ok(payload) => frame::encode_result(&call.id, payload),
                    Err(error) => {
                        tracing::info!(action = %call.action, %error, "CALLERROR");
                        frame::encode_error(&call.id, error)
                    }
                };
                // Unknown actions are counted under one label: a charger
                // must not be able to grow the metric's series at will.
                let action = if crate::ocpp::action::is_ocpp16_action(&call.action) {
                    call.action.as_str()
                } else {
                    "(unknown)"
                };
                let outcome = match &answer {
                    Ok(_) => "answered",
                    Err(error) => error.code.as_str(),
                };
                self.context
                    .state
                    .metrics
                    .ocpp_answered(action, outcome, received.elapsed());
                if self.attachment.is_fenced() {
                    // Another node took the charger over while this message
                    // was handled: the charger is on its new connection now
                    // and hears the answer there (its retransmission is
                    // recognised as a repeat), not from here.
                    tracing::info!(action = %call.action, "answer withheld: the charger was taken over");
                    return Ok(());
                }
                self.log(
                    Direction::Out,
                    if answer.is_ok() { 3 } else { 4 },
                    &call.id,
                    Some(&call.action),
                    &out,
                )
                .await;
                let sent = self.send_text(out).await;
                if call.action == "BootNotification"
                    && answer.as_ref().is_ok_and(|a| a["status"] == "Accepted")
                {
                    // After the answer is out: the charger (re)booted.
                    self.sync_due = None;
                    self.bring_up_to_date();
                }
                sent
            }
            Ok(Frame::CallResult { id, payload }) => {
                let action = self.answered_action(&id).map(str::to_owned);
                self.log(Direction::In, 3, &id, action.as_deref(), text)
                    .await;
                self.on_answer(&id, Ok(payload));
                Ok(())
            }
            Ok(Frame::CallError {
                id,
                code,
                description,
                details,
            }) => {
                let action = self.answered_action(&id).map(str::to_owned);
                self.log(Direction::In, 4, &id, action.as_deref(), text)
                    .await;
                self.on_answer(
                    &id,
                    Err(CommandError::Rejected {
                        code,
                        description,
                        details,
                    }),
                );
                Ok(())
            }
            Err(FrameError::Reply { id, error }) => {
                self.log(Direction::In, 2, &id, None, text).await;
                tracing::info!(%error, "malformed CALL");
                self.context.state.metrics.ocpp_answered(
                    "(unknown)",
                    error.code.as_str(),
                    std::time::Duration::ZERO,
                );
                let out = frame::encode_error(&id, &error);
                self.log(Direction::Out, 4, &id, None, &out).await;
                self.send_text(out).await
            }
            Err(FrameError::Unreadable(why)) => {
                tracing::warn!(%why, frame = %truncate(text), "unreadable frame dropped");
                Ok(())
            }
            Err(FrameError::UnknownMessageType(t)) => {
                tracing::info!(message_type = %t, "frame of unknown MessageTypeId ignored");
                Ok(())
            }
        }
    }

    /// The answer to one CALL: validated, gated by registration, handled.
    async fn answer(&mut self, call: &Call) -> Result<Value, CallError> {
        schema::check_call(Receiver::CentralSystem, &call.action, &call.payload)?;
        if call.action != "BootNotification"
            && self.context.registration != Some(RegistrationStatus::Accepted)
        {
            return Err(CallError::new(
                ErrorCode::SecurityError,
                "Charger is not accepted: send BootNotification and wait for Accepted",
            ));
        }
        let payload = self
            .context
            .handle(&call.action, call.payload.clone())
            .await?;
        // Our own answers are held to the schema too: a bug here must show
        // as an InternalError, not as a payload a charger chokes on.
        if let Err(e) = schema::validate_response(&call.action, &payload) {
            tracing::error!(action = %call.action, %payload, "answer fails its schema: {e}");
            return Err(CallError::internal());
        }
        Ok(payload)
    }

    /// Sends the charger what the server keeps for it (charging profiles,
    /// its local list) from a task of its own: its CALLs go through this
    /// connection's outgoing queue, one at a time and in order, while this
    /// task goes on reading the charger's messages.
    fn bring_up_to_date(&self) {
        tokio::spawn(
            self.state
                .engine
                .clone()
                .charger_ready(self.attachment.charger_id.clone()),
        );
    }

    /// The action of our outstanding CALL an answer with `id` belongs to.
    fn answered_action(&self, id: &str) -> Option<&str> {
        self.pending
            .as_ref()
            .filter(|p| p.message_id == id)
            .map(|p| p.action.as_str())
    }

    fn on_answer(&mut self, id: &str, result: Result<Value, CommandError>) {
        let Some(pending) = self.pending.take_if(|p| p.message_id == id) else {
            tracing::warn!(message_id = %id, "answer to no outstanding CALL dropped");
            return;
        };
        let result =
            result.and_then(
                |payload| match schema::validate_response(&pending.action, &payload) {
                    Ok(()) => Ok(payload),
                    Err(e) => Err(CommandError::InvalidResponse(e.description)),
                },
            );
        let _ = pending.reply.send(result);
    }

    async fn send_call(&mut self, outgoing: Command) -> Result<(), axum::Error> {
        if outgoing.reply.is_closed() {
            return Ok(()); // the caller gave up while the command was queued
        }
        let message_id = format!("{}-{}", self.attachment.connection_id, self.next_message_id);
        self.next_message_id += 1;
        let text = frame::encode_call(&message_id, &outgoing.action, &outgoing.payload);
        self.log(
            Direction::Out,
            2,
            &message_id,
            Some(&outgoing.action),
            &text,
        )
        .await;
        self.pending = Some(Pending {
            message_id,
            action: outgoing.action,
            reply: outgoing.reply,
            deadline: Instant::now() + self.state.config.ocpp_call_timeout,
        });
        self.send_text(text).await
    }
}

/// Completes once the server is stopping (at once if it already is).
async fn stopping(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    // The borrow guard wait_for returns is dropped here, not held in select!.
    let _ = shutdown.wait_for(|stopping| *stopping).await.map(|_| ());
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn truncate(text: &str) -> &str {
    let end = text
        .char_indices()
        .nth(200)
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    &text[..end]
}
