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
    signer: DkimSigner<DkimKey, Done>,
}

pub struct Signer {
    db: DatabaseConnection,
    master_key_file: PathBuf,
    headers: Vec<String>,
    master: Mutex<Option<Arc<MasterKey>>>,
    opened: Mutex<HashMap<i64, Arc<Opened>>>,
}

impl Signer {
    /// The pipeline's signer; `None` when `dkim.sign` is off.
    pub fn new(config: &DkimConfig, db: DatabaseConnection) -> Option<Arc<Signer>> {
        if !config.sign {
            return None;
        }
        // From once more than the message has it (RFC 6376 §8.15): a From: added on the
        // way breaks the signature. mail-auth lists absent fields too, which guards
        // the others the same way.
        let mut headers = config.headers.clone();
        headers.push("From".into());
        Some(Arc::new(Signer {
            db,
            master_key_file: config.master_key_file.clone(),
            headers,
            master: Mutex::new(None),
            opened: Mutex::new(HashMap::new()),
        }))
    }

    /// `message` (header section first) with a DKIM-Signature field per signing key of
    /// its From: domain put before it; unchanged when the domain has none.
    pub async fn sign(&self, message: Vec<u8>) -> Result<Vec<u8>, SignError> {
        let Some(domain) = from_domain(&message) else {
            return Ok(message);
        };
        let keys = store::signing_keys(&self.db, &domain, Utc::now())
            .await
            .map_err(SignError::Db)?;
        if keys.is_empty() {
            return Ok(message);
        }
        let opened = keys
            .iter()
            .map(|k| self.open(k))
            .collect::<Result<Vec<_>, _>>()?;
        let signed = tokio::task::spawn_blocking(move || {
            let mut fields = String::new();
            for key in &opened {
                match key.signer.sign(&message) {
                    Ok(signature) => {
                        metrics().dkim_signature(key.algorithm.name(), "signed");
                        fields.push_str(&signature.to_header());
                    }
                    Err(e) => {
                        metrics().dkim_signature(key.algorithm.name(), "failed");
                        return Err(e.to_string());
                    }
                }
            }
            let mut out = Vec::with_capacity(fields.len() + message.len());
            out.extend_from_slice(fields.as_bytes());
            out.extend_from_slice(&message);
            Ok(out)
        })
        .await;
        match signed {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(reason)) => Err(SignError::Key {
                domain,
                selector: keys
                    .iter()
                    .map(|k| k.key.selector.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                reason,
            }),
            Err(e) => Err(SignError::Key {
                domain,
                selector: String::new(),
                reason: format!("signing task failed: {e}"),
            }),
        }
    }

    /// The key of a row, opened once and kept.
    fn open(&self, info: &KeyInfo) -> Result<Arc<Opened>, SignError> {
        let failed = |reason: String| {
            let algorithm = info.algorithm().name();
            metrics().dkim_signature(algorithm, "failed");
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
        let master = self.master().map_err(failed)?;
        let algorithm = Algorithm::parse(&info.key.algorithm)
            .ok_or_else(|| failed(format!("unknown algorithm `{}`", info.key.algorithm)))?;
        let context = keys::seal_context(&info.domain, &info.key.selector, algorithm);
        let mut pkcs8 = master
            .open(&context, &info.key.sealed_key)
            .map_err(failed)?;
        let key = keys::signing_key(algorithm, &pkcs8);
        pkcs8.iter_mut().for_each(|b| *b = 0);
        let signer = DkimSigner::from_key(key.map_err(failed)?)
            .domain(info.domain.clone())
            .selector(info.key.selector.clone())
            .headers(self.headers.iter().cloned())
            .header_canonicalization(Canonicalization::Relaxed)
            .body_canonicalization(Canonicalization::Relaxed);
        let opened = Arc::new(Opened {
            sealed: info.key.sealed_key.clone(),
            algorithm,
            signer,
        });
        let mut cache = self.opened.lock().expect("dkim cache");
        if cache.len() >= CACHED_KEYS {
            cache.clear();
        }
        cache.insert(info.key.id, opened.clone());
        Ok(opened)
    }

    /// The master key, read at first need; a failure is retried at the next message
    /// (the operator may copy the file in meanwhile).
    fn master(&self) -> Result<Arc<MasterKey>, String> {
        let mut master = self.master.lock().expect("dkim master key");
        if let Some(key) = master.as_ref() {
            return Ok(key.clone());
        }
        let key = Arc::new(MasterKey::load(&self.master_key_file)?);
        *master = Some(key.clone());
        Ok(key)
    }
}

/// The domain of the (first) address of the message's From: field, lower case.
pub fn from_domain(message: &[u8]) -> Option<String> {
    let parsed = MessageParser::new().parse_headers(message)?;
    let field = parsed
        .headers()
        .iter()
        .find(|h| h.name == HeaderName::From)?;
    let address = match &field.value {
        HeaderValue::Address(a) => a.first()?.address.as_deref()?.to_string(),
        _ => return None,
    };
    let (_, domain) = address.trim().rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domain_is_the_first_from_address() {
        let m = |h: &str| format!("Received: x\r\n{h}Subject: s\r\n\r\nbody\r\n");
        assert_eq!(
            from_domain(m("From: Bob <bob@Example.TEST>\r\n").as_bytes()).as_deref(),
            Some("example.test")
        );
        assert_eq!(from_domain(m("To: a@b.test\r\n").as_bytes()), None);
        assert_eq!(from_domain(m("From: undisclosed:;\r\n").as_bytes()), None);
    }
}
