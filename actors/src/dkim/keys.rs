//! Key pairs: made with aws-lc, sealed under the master key, and described as the DNS
//! record (`<selector>._domainkey.<domain> TXT "v=DKIM1; k=...; p=..."`) receivers look
//! up.

use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use mail_auth::common::crypto::{DkimKey, Ed25519Key, RsaKey, Sha256};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

/// Bytes of the master key file.
pub const MASTER_KEY_LEN: usize = 32;

/// The signature algorithms keys are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSA-2048 with SHA-256: what every receiver verifies.
    Rsa,
    /// Ed25519 with SHA-256 (RFC 8463): short keys; not every receiver verifies it yet,
    /// so it is usually published beside an RSA key.
    Ed25519,
}

impl Algorithm {
    /// The `a=` tag of the signature, and the name stored and shown.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa-sha256",
            Algorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// The `k=` tag of the DNS record.
    pub fn key_type(self) -> &'static str {
        match self {
            Algorithm::Rsa => "rsa",
            Algorithm::Ed25519 => "ed25519",
        }
    }

    /// `rsa`, `ed25519` (as the CLI and API take them) or a stored name.
    pub fn parse(text: &str) -> Option<Algorithm> {
        match text.trim().to_ascii_lowercase().as_str() {
            "rsa" | "rsa-sha256" => Some(Algorithm::Rsa),
            "ed25519" | "ed25519-sha256" => Some(Algorithm::Ed25519),
            _ => None,
        }
    }
}

/// A key pair just made: the private key as PKCS#8 DER (to be sealed at once) and the
/// public key as the record's `p=` holds it.
pub struct NewKeyPair {
    pub algorithm: Algorithm,
    pub pkcs8: Zeroizing<Vec<u8>>,
    /// Base64: an X.509 SubjectPublicKeyInfo for RSA, the 32 raw bytes for Ed25519.
    pub public_key: String,
}

fn crypto_error(what: &str) -> impl Fn(aws_lc_rs::error::Unspecified) -> String + '_ {
    move |_| format!("{what} failed")
}

/// Makes a key pair: RSA-2048 or Ed25519.
pub fn generate(algorithm: Algorithm) -> Result<NewKeyPair, String> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    match algorithm {
        Algorithm::Rsa => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(crypto_error("RSA key generation"))?;
            let pkcs8: Pkcs8V1Der = pair
                .as_der()
                .map_err(crypto_error("encoding the RSA key"))?;
            let public: PublicKeyX509Der = pair
                .public_key()
                .as_der()
                .map_err(crypto_error("encoding the RSA public key"))?;
            Ok(NewKeyPair {
                algorithm,
                pkcs8: Zeroizing::new(pkcs8.as_ref().to_vec()),
                public_key: b64(public.as_ref()),
            })
        }
        Algorithm::Ed25519 => {
            let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(crypto_error("Ed25519 key generation"))?;
            let pair = Ed25519KeyPair::from_pkcs8(document.as_ref())
                .map_err(|e| format!("reading the new Ed25519 key: {e}"))?;
            Ok(NewKeyPair {
                algorithm,
                pkcs8: Zeroizing::new(document.as_ref().to_vec()),
                public_key: b64(pair.public_key().as_ref()),
            })
        }
    }
}

/// The private key of a row, opened, ready to sign with.
pub fn signing_key(algorithm: Algorithm, pkcs8: &[u8]) -> Result<DkimKey, String> {
    match algorithm {
        Algorithm::Rsa => {
            RsaKey::<Sha256>::from_key_der(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
                .map(DkimKey::from)
                .map_err(|e| format!("reading the RSA key: {e}"))
        }
        Algorithm::Ed25519 => Ed25519Key::from_pkcs8_der(pkcs8)
            .map(DkimKey::from)
            .map_err(|e| format!("reading the Ed25519 key: {e}")),
    }
}

/// The TXT record a key needs: its name and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// `<selector>._domainkey.<domain>`, without the final dot.
    pub name: String,
    /// `v=DKIM1; k=rsa; p=...`
    pub value: String,
}

impl DnsRecord {
    pub fn dkim(domain: &str, selector: &str, algorithm: Algorithm, public_key: &str) -> Self {
        DnsRecord {
            name: format!("{selector}._domainkey.{domain}"),
            value: format!("v=DKIM1; k={}; p={public_key}", algorithm.key_type()),
        }
    }
}

/// The key that seals every private key in the database (`dkim.master_key_file`).
pub struct MasterKey {
    key: LessSafeKey,
}

impl MasterKey {
    /// Reads the file: exactly [`MASTER_KEY_LEN`] bytes, readable by its owner only.
    pub fn load(path: &Path) -> Result<MasterKey, String> {
        use std::os::unix::fs::MetadataExt;
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| {
            format!("dkim.master_key_file {shown}: {e} (it is made by the first `mairust dkim generate`; every node needs the same file)")
        })?;
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "dkim.master_key_file {shown} may be read by other users (mode {:o}): run `chmod 600 {shown}`",
                meta.mode() & 0o777
            ));
        }
        let mut bytes =
            std::fs::read(path).map_err(|e| format!("dkim.master_key_file {shown}: {e}"))?;
        let key =
            Self::from_bytes(&bytes).map_err(|e| format!("dkim.master_key_file {shown}: {e}"));
        bytes.iter_mut().for_each(|b| *b = 0);
        key
    }

    /// Reads the file, or makes it (mode 0600, flushed with its directory entry) when
    /// there is none: for the command that adds the first key.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, String> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(path),
            Err(e) => Err(format!("dkim.master_key_file {}: {e}", path.display())),
        }
    }

    /// Made whole under a temporary name (0600, flushed), then linked to its name in one
    /// step: a reader never sees a short file, and of two commands making it at once one
    /// wins and the other reads the winner's.
    fn create(path: &Path) -> Result<MasterKey, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let shown = path.display();
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .map_err(crypto_error("making the master key"))?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        crate::private_dir::create_private_dir(&parent)
            .map_err(|e| format!("dkim.master_key_file: creating {}: {e}", parent.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = parent.join(format!(".{name}.{}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .and_then(|mut f| {
                f.write_all(bytes.as_ref())?;
                f.sync_all()
            });
        let linked = written.and_then(|()| std::fs::hard_link(&temporary, path));
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => {
                std::fs::File::open(&parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| format!("dkim.master_key_file {shown}: {e}"))?;
                Self::from_bytes(bytes.as_ref())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Self::load(path),
            Err(e) => Err(format!("dkim.master_key_file {shown}: {e}")),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<MasterKey, String> {
        if bytes.len() != MASTER_KEY_LEN {
            return Err(format!(
                "holds {} bytes where a master key has {MASTER_KEY_LEN}",
                bytes.len()
            ));
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(crypto_error("AES key setup"))?;
        Ok(MasterKey {
            key: LessSafeKey::new(key),
        })
    }

    /// A fresh random nonce followed by the ciphertext and its tag. `context` (domain,
    /// selector, algorithm) is authenticated with it: a sealed key copied to another
    /// row does not open.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(crypto_error("making a nonce"))?;
        let mut sealed = Zeroizing::new(plaintext.to_vec());
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut *sealed,
            )
            .map_err(crypto_error("sealing the key"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext [`MasterKey::seal`] sealed with the same context; an error for
    /// another master key, another context or altered bytes.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        if sealed.len() < NONCE_LEN {
            return Err("the sealed key is truncated".into());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(crypto_error("nonce"))?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let opened = self
            .key
            .open_in_place(nonce, Aad::from(context), &mut buffer)
            .map(|plain| Zeroizing::new(plain.to_vec()));
        opened.map_err(|_| {
            "the sealed key does not open with dkim.master_key_file (another node's master key, or the row was altered)".into()
        })
    }
}

/// What a sealed key is bound to: its row's domain, selector, algorithm and public key
/// (so a row whose published key was swapped does not open).
pub fn seal_context(
    domain: &str,
    selector: &str,
    algorithm: Algorithm,
    public_key: &str,
) -> Vec<u8> {
    format!(
        "mairust-dkim\0{domain}\0{selector}\0{}\0{public_key}",
        algorithm.name()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_in_their_context() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let master = MasterKey::load_or_create(&path).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let ctx = seal_context("example.test", "s1", Algorithm::Ed25519, "pk");
        let sealed = master.seal(&ctx, b"secret").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(&master.open(&ctx, &sealed).unwrap()[..], b"secret");
        let other = seal_context("example.test", "s2", Algorithm::Ed25519, "pk");
        assert!(master.open(&other, &sealed).is_err());
        let swapped = seal_context("example.test", "s1", Algorithm::Ed25519, "other");
        assert!(master.open(&swapped, &sealed).is_err());
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(master.open(&ctx, &altered).is_err());
        // The same file, read again, opens it; another master key does not.
        assert_eq!(
            &MasterKey::load(&path).unwrap().open(&ctx, &sealed).unwrap()[..],
            b"secret"
        );
        // A second creation reads the file made first.
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(&again.open(&ctx, &sealed).unwrap()[..], b"secret");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1,
            "no temporary left"
        );
        let stranger = MasterKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert!(stranger.open(&ctx, &sealed).is_err());
    }

    #[test]
    fn a_master_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, [7u8; MASTER_KEY_LEN]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterKey::load(&path).err().unwrap();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(MasterKey::load(&path).is_ok());
        std::fs::write(&path, [7u8; 16]).unwrap();
        let e = MasterKey::load(&path).err().unwrap();
        assert!(e.contains("16 bytes"), "{e}");
    }

    #[test]
    fn generated_keys_sign() {
        for algorithm in [Algorithm::Rsa, Algorithm::Ed25519] {
            let pair = generate(algorithm).unwrap();
            let key = signing_key(algorithm, &pair.pkcs8).unwrap();
            let record = DnsRecord::dkim("example.test", "s", algorithm, &pair.public_key);
            assert_eq!(record.name, "s._domainkey.example.test");
            assert!(record.value.starts_with("v=DKIM1; k="), "{}", record.value);
            let signature = mail_auth::dkim::DkimSigner::from_key(key)
                .domain("example.test")
                .selector("s")
                .headers(["From"])
                .sign(b"From: a@example.test\r\n\r\nhi\r\n")
                .unwrap();
            assert!(!signature.b.is_empty());
        }
    }
}
