//! The one way a message gets in: every rule between a client handing a message over
//! (SMTP DATA, `POST /send`) and the answer it gets.
//!
//! A boundary (the SMTP session, the API handler) speaks its protocol and asks the
//! pipeline, in this order:
//! 1. [`Pipeline::accepting`] and [`Pipeline::check_size`] — may anything come in now;
//! 2. the sender: [`Pipeline::check_envelope`] (SMTP AUTH) or
//!    [`Pipeline::sender_account`] (the API's sender is an account);
//! 3. [`Pipeline::add_recipient`] per address — the recipient policy: limits, local
//!    users, relaying, de-duplication;
//! 4. [`Pipeline::received_header`] — the header put before the content;
//! 5. [`Pipeline::submit`] — the From: header check, the pre_receive/pre_send hooks,
//!    durable storage, then post_receive.
//!
//! Each step answers `Ok` or a [`SubmitError`], which the boundary turns into its own
//! reply once. Headers the server adds to the content (DKIM signatures, spam verdicts)
//! belong in [`Pipeline::submit`], between the hooks and the store, so both ways in get
//! them.

use std::net::IpAddr;
use std::sync::Arc;

use actix::Recipient;
use tracing::Instrument;

use super::directory::Directory;
use super::error::{SenderProblem, SubmitError};
use super::received::{Origin, received_header};
use super::recipients::Recipients;
use super::sender::{Policy, Submitter};
use crate::accounts::RecipientLookup;
use crate::config::{Config, HookEvent};
use crate::dkim::Signer;
use crate::health_state::{Dependency, DependencyFailed, HealthState};
use crate::hooks::{HookDispatcher, Verdict};
use crate::limits::sending::ChargeError;
use crate::proto::Address;
use crate::sender_auth::{Action, Checker};
use crate::spam::{self, Rspamd, ScanEnvelope};
use crate::storage::{IncomingMessage, StoreMessage};
use crate::trace;

/// Bodies larger than this are rebuilt (headers added) on a blocking thread.
const OFF_THREAD_BYTES: usize = 256 * 1024;

/// What the pipeline needs from the running node; shared (`Arc`) by every session and
/// API request.
pub struct Pipeline {
    pub config: Arc<Config>,
    pub directory: Arc<dyn Directory>,
    pub storage: Recipient<StoreMessage>,
    pub hooks: Arc<HookDispatcher>,
    pub health: Arc<HealthState>,
    /// Told when a directory lookup fails, so the HealthMonitor probes at once.
    pub health_monitor: Recipient<DependencyFailed>,
    /// Signs what our users submit (`None`: `dkim.sign` off, or no database).
    pub dkim: Option<Arc<Signer>>,
    /// Checks what other servers send (`None`: `mail_auth.verify` off).
    pub sender_auth: Option<Arc<Checker>>,
    /// Scans with rspamd (`None`: no `spam.rspamd.url`).
    pub spam: Option<Arc<Rspamd>>,
    /// Messages and recipients per hour of accounts (`None`: not counted, tests).
    pub send_limits: Option<Arc<crate::limits::sending::SendLimits>>,
}

/// A message ready to be checked and stored.
pub struct Submission<'a> {
    /// UUIDv7: the message's id, named in the Received header.
    pub id: String,
    /// The Received header ([`Pipeline::received_header`]) followed by the content.
    pub body: Vec<u8>,
    /// The reverse-path; `None` for `<>`.
    pub sender: Option<&'a Address>,
    pub recipients: Recipients,
    /// The listener's name, or `api`.
    pub listener: &'static str,
    pub remote: IpAddr,
    /// The client's HELO/EHLO name (SMTP).
    pub helo: Option<&'a str>,
    /// The account that submits it (SMTP AUTH, the API's sender); `None` for mail from
    /// other servers.
    pub submitter: Option<&'a Submitter>,
}

/// A message stored durably.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub id: String,
    /// Bytes stored, our Received header included.
    pub size: usize,
    /// The Message-ID header, empty when it has none.
    pub message_id: String,
}

impl Pipeline {
    /// Tells the HealthMonitor a directory lookup failed (it probes at once).
    pub fn directory_failed(&self) {
        self.health_monitor
            .do_send(DependencyFailed(Dependency::Database));
    }

    /// Whether a message may come in now: every dependency up, room in the store.
    pub fn accepting(&self) -> Result<(), SubmitError> {
        if !self.health.accepting_mail() {
            return Err(SubmitError::NotAccepting);
        }
        if self.health.storage_full() {
            return Err(SubmitError::StorageFull);
        }
        Ok(())
    }

    /// A message of `size` bytes (as the client sends it) fits `max_message_size`.
    pub fn check_size(&self, size: u64) -> Result<(), SubmitError> {
        let limit = self.config.smtp.limits.max_message_size;
        if size > limit as u64 {
            return Err(SubmitError::TooBig { limit });
        }
        Ok(())
    }

    /// The checks in force for authenticated clients (`smtp.submission`).
    pub fn policy(&self) -> Policy {
        Policy::from_config(&self.config.smtp)
    }

    /// The envelope sender an authenticated account gives (`None`: `<>`).
    pub fn check_envelope(
        &self,
        submitter: &Submitter,
        sender: Option<&Address>,
    ) -> Result<(), SubmitError> {
        submitter
            .check_envelope(self.policy(), sender)
            .map_err(SubmitError::Sender)
    }

    /// The account that sends as `from` through the API: an existing, enabled user of
    /// one of this server's domains.
    pub async fn sender_account(&self, from: &Address) -> Result<Submitter, SubmitError> {
        let directory = &*self.directory;
        if !self.looked_up(directory.is_local_domain(&from.domain).await)? {
            return Err(SubmitError::NoSuchSender(SenderProblem::ForeignDomain(
                from.domain.clone(),
            )));
        }
        let key = from.key();
        match self.looked_up(directory.user(&key).await)? {
            Some(user) if !user.disabled => {
                let submitter = Submitter::for_user(&user);
                self.check_envelope(&submitter, Some(from))?;
                Ok(submitter)
            }
            Some(_) => Err(SubmitError::NoSuchSender(SenderProblem::Disabled(key))),
            None => Err(SubmitError::NoSuchSender(SenderProblem::NoUser(key))),
        }
    }

    /// `count` recipients fit `max_recipients`. A boundary that knows them all at once
    /// (the API) asks first, so thousands of them cost no lookup.
    pub fn check_recipient_count(&self, count: usize) -> Result<(), SubmitError> {
        let limit = self.config.smtp.limits.max_recipients;
        if count > limit {
            return Err(SubmitError::TooManyRecipients { limit });
        }
        Ok(())
    }

    /// The recipient policy for one address (SPEC M3): at most `max_recipients` per
    /// message (duplicates count, as RCPT commands do), local users of our domains from
    /// anyone, other domains only when `may_relay` (authenticated clients): never an
    /// open relay. Duplicates are admitted once.
    pub async fn add_recipient(
        &self,
        recipients: &mut Recipients,
        address: Address,
        may_relay: bool,
    ) -> Result<(), SubmitError> {
        self.check_recipient_count(recipients.admitted() + 1)?;
        let span = trace::child_span(|| tracing::info_span!("db.lookup_recipient"));
        let lookup = self.directory.recipient(&address).instrument(span).await;
        match self.looked_up(lookup)? {
            RecipientLookup::Local(local) => recipients.add_local(local),
            RecipientLookup::Remote if may_relay => recipients.add_outbound(address),
            RecipientLookup::Remote => return Err(SubmitError::RelayDenied(address)),
            RecipientLookup::UnknownUser => return Err(SubmitError::UnknownUser(address)),
        }
        Ok(())
    }

    /// The Received header for a message `id` (see [`received_header`]).
    pub fn received_header(&self, origin: Origin<'_>, id: &str, recipients: &Recipients) -> String {
        received_header(&self.config.server.hostname, origin, id, recipients)
    }

    /// How many copies of a body the hooks may hold at once while it is screened: a
    /// pre_receive or pre_send call holds its base64 form, the JSON request and the
    /// request's own copy beside the body, about four times its size.
    /// A body rebuilt with header fields on top (the sender checks' and rspamd's) or
    /// without forged Authentication-Results (any message may carry one, checked or
    /// not) is briefly held twice.
    pub fn copies_while_screened(&self, has_outbound: bool) -> usize {
        let screened = if self.hooks.has(HookEvent::PreReceive)
            || (has_outbound && self.hooks.has(HookEvent::PreSend))
        {
            4
        } else {
            1
        };
        screened + 1
    }

    /// Our authserv-id (`mail_auth.authserv_id`, else the host name), the one the
    /// sender checks write: known whether or not they run.
    fn authserv_id(&self) -> &str {
        self.config
            .mail_auth
            .authserv_id(&self.config.server.hostname)
    }

    /// Checks, screens and stores a message; `Ok` only once it is durable (SPEC M4).
    pub async fn submit(&self, submission: Submission<'_>) -> Result<Accepted, SubmitError> {
        self.accepting()?;
        if let Some(submitter) = submission.submitter {
            submitter
                .check_from_header(self.policy(), &submission.body)
                .map_err(SubmitError::Sender)?;
        }
        let mut message = IncomingMessage::new(
            submission.id,
            submission.body,
            submission.sender.map(|a| a.to_string()).unwrap_or_default(),
            submission.recipients.local,
            submission.listener,
            submission.remote,
            submission.recipients.outbound,
        );
        message.submitted_by = submission.submitter.map(|s| s.account().to_string());
        match &self.sender_auth {
            Some(checker) if submission.submitter.is_none() => {
                let envelope = crate::sender_auth::Envelope {
                    remote: submission.remote,
                    helo: submission.helo,
                    mail_from: submission.sender,
                };
                self.check_sender(checker, &mut message, envelope).await?;
            }
            // Mail that is not checked (our users' mail, or any with `mail_auth.verify`
            // off) may not carry a verdict in our name to a local reader either.
            _ => {
                let authserv_id = self.authserv_id().to_string();
                let forged = move |field: &[u8]| crate::sender_auth::claims(field, &authserv_id);
                put_on_top(&mut message, String::new(), forged).await?;
            }
        }
        if let Some(rspamd) = &self.spam
            && (submission.submitter.is_none() || rspamd.scans_outbound())
        {
            self.scan(rspamd, &mut message, submission.helo).await?;
        }
        self.screen(&mut message).await?;
        // Charged last: a message refused by a check above costs no allowance, and one
        // that is not kept after all (signing, storage, a failed task) is given back.
        let mut charge = None;
        if let Some(submitter) = submission.submitter
            && let Some(limits) = &self.send_limits
        {
            let recipients = (message.recipients.len() + message.outbound.len()) as u64;
            match limits.charge(submitter.account(), recipients).await {
                Ok(c) => charge = Some((limits, c)),
                Err(ChargeError::Exceeded(e)) => return Err(SubmitError::SendLimit(e)),
                Err(ChargeError::Db(e)) => return Err(SubmitError::SendCounters(e)),
            }
        }
        let result = self.sign_and_store(submission.submitter, message).await;
        // `sign_and_store` answers `Ok` once the message is stored, and only then; any
        // error tells the client it was not taken (it may send it again, and pay then).
        if result.is_err()
            && let Some((limits, c)) = &charge
        {
            limits.refund(c).await;
        }
        result
    }

    /// The last steps: the DKIM signature of our users' mail, then durable storage.
    async fn sign_and_store(
        &self,
        submitter: Option<&Submitter>,
        mut message: IncomingMessage,
    ) -> Result<Accepted, SubmitError> {
        if let Some(submitter) = submitter
            && let Some(dkim) = &self.dkim
        {
            let span = trace::child_span(|| tracing::info_span!("dkim.sign"));
            let body = Vec::from(std::mem::take(&mut message.body));
            let owns = |domain: &str| submitter.owns_domain(domain);
            let signed = dkim.sign(body, owns).instrument(span).await;
            let signed = signed.map_err(SubmitError::NotSigned)?;
            match signed.sha256 {
                Some(sha256) => message.set_body(signed.body, sha256),
                None => message.body = signed.body.into(),
            }
        }
        let accepted = Accepted {
            id: message.id.clone(),
            size: message.body.len(),
            message_id: message.meta.message_id.clone().unwrap_or_default(),
        };
        let told = self
            .hooks
            .has(HookEvent::PostReceive)
            .then(|| message.clone());
        let span = trace::child_span(|| tracing::info_span!("storage.store", size = accepted.size));
        let request = span.in_scope(|| StoreMessage::new(message));
        match self.storage.send(request).instrument(span).await {
            Ok(Ok(())) => {
                if let Some(stored) = told {
                    self.hooks.post_receive(&stored);
                }
                Ok(accepted)
            }
            Ok(Err(e)) => Err(SubmitError::NotStored(e)),
            Err(e) => Err(SubmitError::StorageUnreachable(e)),
        }
    }

    /// The checks of mail from other servers (`sender_auth`): refused, or our
    /// Authentication-Results on top (forged ones of our id removed), the summary kept
    /// with the message, and the recipients' Junk mailbox when that is the verdict.
    async fn check_sender(
        &self,
        checker: &Checker,
        message: &mut IncomingMessage,
        envelope: crate::sender_auth::Envelope<'_>,
    ) -> Result<(), SubmitError> {
        let span = trace::child_span(|| tracing::info_span!("mail_auth.check"));
        let checked = checker
            .check(message.body.clone(), envelope)
            .instrument(span)
            .await;
        match &checked.action {
            Action::Reject(text) => return Err(SubmitError::AuthFailed(text.clone())),
            Action::Defer(text) => return Err(SubmitError::AuthDeferred(text.clone())),
            Action::Junk => self.to_junk(message).await?,
            Action::Accept => {}
        }
        message.authentication = serde_json::to_string(&checked.summary).ok();
        let authserv_id = checker.authserv_id().to_string();
        let forged = move |field: &[u8]| crate::sender_auth::claims(field, &authserv_id);
        put_on_top(message, checked.header, forged).await
    }

    /// The rspamd scan (`spam`): refused or deferred as rspamd says, or its `X-Spam-*`
    /// headers on top (those the message came with removed), the report kept with the
    /// message, and the Junk mailbox for spam.
    async fn scan(
        &self,
        rspamd: &Rspamd,
        message: &mut IncomingMessage,
        helo: Option<&str>,
    ) -> Result<(), SubmitError> {
        let span = trace::child_span(|| tracing::info_span!("spam.scan"));
        let recipients = message
            .recipients
            .iter()
            .map(|r| r.address.clone())
            .chain(message.outbound.iter().map(|a| a.to_string()))
            .collect();
        let envelope = ScanEnvelope {
            remote: message.remote_ip,
            helo,
            mail_from: &message.envelope_from,
            recipients,
            user: message.submitted_by.as_deref(),
            queue_id: &message.id,
        };
        let verdict = rspamd
            .scan(message.body.clone(), envelope)
            .instrument(span)
            .await;
        let submitted = message.submitted_by.is_some();
        let (headers, report) = match verdict {
            spam::Verdict::Reject(text) => return Err(SubmitError::Spam(text)),
            spam::Verdict::Defer(text) => return Err(SubmitError::SpamDeferred(text)),
            // Our user's mail that rspamd calls spam does not leave from our address.
            spam::Verdict::Junk { .. } if submitted && !message.outbound.is_empty() => {
                return Err(SubmitError::Spam(
                    "message refused: it looks like spam to our filter".into(),
                ));
            }
            spam::Verdict::Junk { headers, report } => {
                self.to_junk(message).await?;
                (headers, Some(report))
            }
            spam::Verdict::Accept { headers, report } => (headers, report),
        };
        message.spam = report.and_then(|r| serde_json::to_string(&r).ok());
        // What users submit carries no verdict of our filter (it would tell outsiders
        // our scores); its report is kept on the message all the same.
        let headers = if submitted { String::new() } else { headers };
        // Verdicts the message came with go, scanned or not.
        let theirs = |field: &[u8]| {
            crate::sender_auth::field_name(field).is_some_and(|n| crate::spam::is_spam_header(&n))
        };
        put_on_top(message, headers, theirs).await
    }

    /// Every local recipient's entry goes to their Junk mailbox (when they have one).
    async fn to_junk(&self, message: &mut IncomingMessage) -> Result<(), SubmitError> {
        for recipient in &mut message.recipients {
            let junk = self
                .directory
                .mailbox(recipient.user_id, crate::sender_auth::JUNK)
                .await;
            match self.looked_up(junk)? {
                Some(id) => recipient.inbox_id = id,
                None => {
                    tracing::warn!(
                        component = "smtp",
                        event = "no_junk_mailbox",
                        user_id = recipient.user_id,
                        "the recipient has no Junk mailbox: quarantined mail goes to the INBOX"
                    )
                }
            }
        }
        Ok(())
    }

    /// The hooks every message passes before it is stored: pre_receive, then pre_send
    /// when it has remote recipients. Tags of an allowing hook go on the mailbox
    /// entries; the first refusal or deferral ends it.
    async fn screen(&self, message: &mut IncomingMessage) -> Result<(), SubmitError> {
        if self.hooks.has(HookEvent::PreReceive) {
            let verdict = self.hooks.pre_receive(message).await;
            follow(verdict, "pre_receive", message)?;
        }
        if !message.outbound.is_empty() && self.hooks.has(HookEvent::PreSend) {
            let verdict = self.hooks.pre_send(message).await;
            follow(verdict, "pre_send", message)?;
        }
        Ok(())
    }

    /// A directory answer; a failure also tells the HealthMonitor (the boundary logs it).
    fn looked_up<T>(&self, answer: Result<T, sea_orm::DbErr>) -> Result<T, SubmitError> {
        answer.map_err(|e| {
            self.directory_failed();
            SubmitError::Directory(e)
        })
    }
}

/// `headers` put on top of the message after the header fields `drop` picks were
/// removed; the digest follows. A large body is copied and hashed off the async
/// threads.
async fn put_on_top(
    message: &mut IncomingMessage,
    headers: String,
    drop: impl Fn(&[u8]) -> bool + Send + 'static,
) -> Result<(), SubmitError> {
    // Only the header section is looked at: cheap, on this thread. Most messages carry
    // nothing to drop, and then nothing is copied.
    if headers.is_empty() && !crate::sender_auth::has_field(&message.body, &drop) {
        return Ok(());
    }
    let large = message.body.len() > OFF_THREAD_BYTES;
    let body = std::mem::take(&mut message.body);
    let rebuild = move || {
        let stripped = crate::sender_auth::without_fields(&body, drop);
        let kept = stripped.as_deref().unwrap_or(&body);
        let mut out = Vec::with_capacity(headers.len() + kept.len());
        out.extend_from_slice(headers.as_bytes());
        out.extend_from_slice(kept);
        let sha256 = crate::storage::digest(&out);
        (out, sha256)
    };
    let (body, sha256) = if large {
        tokio::task::spawn_blocking(rebuild)
            .await
            .map_err(|e| SubmitError::Internal(format!("adding header fields: {e}")))?
    } else {
        rebuild()
    };
    message.set_body(body, sha256);
    Ok(())
}

/// One hook's verdict on `message`; its text is made single-line and bounded. The
/// boundary logs a refusal under its own component (`smtp`, `api`).
fn follow(
    verdict: Verdict,
    hook: &'static str,
    message: &mut IncomingMessage,
) -> Result<(), SubmitError> {
    let said = |text: String| crate::proto::text::sanitize(text.trim());
    match verdict {
        Verdict::Allow { tags } => {
            message.tags.extend(tags);
            Ok(())
        }
        Verdict::Reject(text) => Err(SubmitError::Rejected {
            hook,
            text: said(text),
        }),
        Verdict::Tempfail(text) => Err(SubmitError::Deferred {
            hook,
            text: said(text),
        }),
    }
}
