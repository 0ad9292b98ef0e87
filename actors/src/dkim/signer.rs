//! [`Signer`]: the step of the submission pipeline that signs mail from our domains.
//!
//! Per message: the From: domain's signing keys are read from the database (one
//! indexed query, so a key added, rotated or removed on any node counts from the next
//! message), each key is opened once and then kept by row (its sealed bytes compared on
//! every use), and the signatures (one per algorithm: RSA and Ed25519 side by side when
//! both exist) are made off the async threads. A domain with a key whose signature
//! cannot be made (the master key file missing, a row that does not open) gets a
//! temporary error, never unsigned mail that its DMARC policy would have receivers
//! refuse.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use mail_auth::common::crypto::DkimKey;
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::{Canonicalization, DkimSigner, Done};
use mail_parser::{HeaderName, HeaderValue, MessageParser};
use sea_orm::DatabaseConnection;

use super::keys::{self, Algorithm, MasterKey};
use super::store::{self, KeyInfo};
use crate::config::DkimConfig;
use crate::metrics::metrics;

/// Opened keys kept at most; more (keys come and go by rotation) empties the cache.
const CACHED_KEYS: usize = 256;

/// Why a message that should be signed was not.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("reading the domain's DKIM keys: {0}")]
    Db(sea_orm::DbErr),
    #[error("DKIM key {selector} of {domain}: {reason}")]
    Key {
        domain: String,
        selector: String,
        reason: String,
    },
}

struct Opened {
    /// The row's sealed bytes when it was opened: a row changed under the same id (a
    /// restore) is opened again.
    sealed: Vec<u8>,
    algorithm: Algorithm,
    domain: String,
    selector: String,
    signer: DkimSigner<DkimKey, Done>,
}

pub struct Signer {
    db: DatabaseConnection,
    master_key_file: PathBuf,
    headers: Vec<String>,
    master: Mutex<Option<Arc<MasterKey>>>,
    opened: Mutex<HashMap<i64, Arc<Opened>>>,
}

/// What [`Signer::sign`] gives back: the message, and its new SHA-256 (hex) when
/// DKIM-Signature fields were put before it (`None`: unchanged).
pub struct Signed {
    pub body: Vec<u8>,
    pub sha256: Option<String>,
}

impl Signer {
    /// The pipeline's signer; `None` when `dkim.sign` is off.
    pub fn new(config: &DkimConfig, db: DatabaseConnection) -> Option<Arc<Signer>> {
        if !config.sign {
            return None;
        }
        // Every field once more than the message has it (RFC 6376 §8.15): a field of
        // the list added on the way (a second From:, Subject:, To:) breaks the
        // signature. mail-auth lists a name given twice among the absent ones, once
        // after the occurrences it signed.
        let mut headers = config.headers.clone();
        headers.extend(config.headers.iter().cloned());
        Some(Arc::new(Signer {
            db,
            master_key_file: config.master_key_file.clone(),
            headers,
            master: Mutex::new(None),
            opened: Mutex::new(HashMap::new()),
        }))
    }

    /// `message` (header section first) with a DKIM-Signature field per signing key of
    /// each of its From: domains that `owns` (a domain of the submitting account), put
    /// before it; unchanged when no key signs it. A domain with keys none of which can
    /// be used is an error (the message is dropped: it is refused); a key that fails
    /// beside one that works is logged and left out.
    pub async fn sign(
        &self,
        message: Vec<u8>,
        owns: impl Fn(&str) -> bool,
    ) -> Result<Signed, SignError> {
        let mut domains = from_domains(&message);
        domains.retain(|d| owns(d));
        let mut opened = Vec::new();
        for domain in domains {
            let keys = store::signing_keys(&self.db, &domain, Utc::now())
                .await
                .map_err(SignError::Db)?;
            let mut failure = None;
            let mut usable = 0;
            for key in &keys {
                match self.open(key) {
                    Ok(key) => {
                        opened.push(key);
                        usable += 1;
                    }
                    Err(e) => {
                        tracing::error!(component = "dkim", event = "dkim_key_unusable", error = %e, "a DKIM key cannot be used; signing with the others");
                        failure = Some(e);
                    }
                }
            }
            if let Some(e) = failure
                && usable == 0
            {
                return Err(e);
            }
        }
        if opened.is_empty() {
            return Ok(Signed {
                body: message,
                sha256: None,
            });
        }
        let signed = tokio::task::spawn_blocking(move || {
            let mut fields = String::new();
            for key in &opened {
                match key.signer.sign(&message) {
                    Ok(signature) => fields.push_str(&signature.to_header()),
                    Err(e) => {
                        metrics().dkim_signature(key.algorithm.name(), "failed");
                        return Err(SignError::Key {
                            domain: key.domain.clone(),
                            selector: key.selector.clone(),
                            reason: e.to_string(),
                        });
                    }
                }
            }
            for key in &opened {
                metrics().dkim_signature(key.algorithm.name(), "signed");
            }
            let mut body = message;
            body.splice(0..0, fields.into_bytes());
            let sha256 = Some(crate::storage::digest(&body));
            Ok(Signed { body, sha256 })
        })
        .await;
        signed.unwrap_or_else(|e| {
            Err(SignError::Key {
                domain: String::new(),
                selector: String::new(),
                reason: format!("signing task failed: {e}"),
            })
        })
    }

    /// At start: says in the log when the database holds keys this node's master key
    /// file cannot open (missing, or another node's), before mail from those domains
    /// is refused for it.
    pub async fn check_at_start(&self) {
        let master = match MasterKey::load(&self.master_key_file) {
            Ok(m) => m,
            Err(e) => {
                if let Ok(Some(_)) = store::check_master_missing(&self.db).await {
                    tracing::error!(component = "dkim", event = "dkim_master_key_unusable", error = %e, "the database holds DKIM keys but this node cannot read dkim.master_key_file: mail from those domains is refused (451) until the file is copied from the node that made them");
                }
                return;
            }
        };
        match store::check_master(&self.db, &master).await {
            Ok(Some(false)) => {
                tracing::error!(component = "dkim", event = "dkim_master_key_unusable", path = %self.master_key_file.display(), "dkim.master_key_file does not open the DKIM keys in the database (another node's file?): mail from those domains is refused (451) until the right file is in place")
            }
            Ok(_) => *self.master.lock().expect("dkim master key") = Some(Arc::new(master)),
            Err(e) => {
                tracing::warn!(component = "dkim", event = "dkim_check_failed", error = %e, "DKIM keys not checked at start")
            }
        }
    }

    /// The key of a row, opened once and kept. A key that does not open with the
    /// master key held is tried once more with the file read again (an operator may
    /// have put the right file in place).
    fn open(&self, info: &KeyInfo) -> Result<Arc<Opened>, SignError> {
        let failed = |reason: String| {
            metrics().dkim_signature(info.algorithm().name(), "failed");
            SignError::Key {
                domain: info.domain.clone(),
                selector: info.key.selector.clone(),
                reason,
            }
        };
        if let Some(found) = self.opened.lock().expect("dkim cache").get(&info.key.id)
            && found.sealed == info.key.sealed_key
        {
            return Ok(found.clone());
        }
        let mut pkcs8 = store::open_key(&*self.master(false).map_err(failed)?, info);
        if pkcs8.is_err() {
            pkcs8 = store::open_key(&*self.master(true).map_err(failed)?, info);
        }
        let pkcs8 = pkcs8.map_err(failed)?;
        let algorithm = info.algorithm();
        let key = keys::signing_key(algorithm, &pkcs8).map_err(failed)?;
        let signer = DkimSigner::from_key(key)
            .domain(info.domain.clone())
            .selector(info.key.selector.clone())
            .headers(self.headers.iter().cloned())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        let opened = Arc::new(Opened {
            sealed: info.key.sealed_key.clone(),
            algorithm,
            domain: info.domain.clone(),
            selector: info.key.selector.clone(),
            signer,
        });
        let mut cache = self.opened.lock().expect("dkim cache");
        if cache.len() >= CACHED_KEYS {
            cache.clear();
        }
        cache.insert(info.key.id, opened.clone());
        Ok(opened)
    }

    /// The master key, read at first need, or again when `reread`; a failure is tried
    /// again at the next message.
    fn master(&self, reread: bool) -> Result<Arc<MasterKey>, String> {
        let mut master = self.master.lock().expect("dkim master key");
        if let Some(key) = master.as_ref()
            && !reread
        {
            return Ok(key.clone());
        }
        *master = None;
        let key = Arc::new(MasterKey::load(&self.master_key_file)?);
        *master = Some(key.clone());
        Ok(key)
    }
}

/// The distinct domains of the addresses of the message's From: field(s), lower case,
/// in order.
pub fn from_domains(message: &[u8]) -> Vec<String> {
    let Some(parsed) = MessageParser::new().parse_headers(message) else {
        return Vec::new();
    };
    let mut domains: Vec<String> = Vec::new();
    for field in parsed
        .headers()
        .iter()
        .filter(|h| h.name == HeaderName::From)
    {
        let HeaderValue::Address(address) = &field.value else {
            continue;
        };
        for mailbox in address.iter() {
            let Some((_, domain)) = mailbox
                .address
                .as_deref()
                .and_then(|a| a.trim().rsplit_once('@'))
            else {
                continue;
            };
            let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
            if !domain.is_empty() && !domains.contains(&domain) {
                domains.push(domain);
            }
        }
    }
    domains
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domains_are_every_from_address_domain_once() {
        let m = |h: &str| format!("Received: x\r\n{h}Subject: s\r\n\r\nbody\r\n");
        assert_eq!(
            from_domains(m("From: Bob <bob@Example.TEST>\r\n").as_bytes()),
            ["example.test"]
        );
        assert_eq!(
            from_domains(m("From: a@one.test, b@TWO.test, c@one.test\r\n").as_bytes()),
            ["one.test", "two.test"]
        );
        assert!(from_domains(m("To: a@b.test\r\n").as_bytes()).is_empty());
        assert!(from_domains(m("From: undisclosed:;\r\n").as_bytes()).is_empty());
    }
}
