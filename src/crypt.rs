//! age encryption of everything that holds user data: dumps, file blobs and file indexes.
//! A stage after compression on the way out, before decompression on the way back, each
//! stored object one standard age file, so `age -d -i key.txt < object | zstd -d` reads it
//! without stowage.
//!
//! The backup side holds only recipients (public keys) or a passphrase; reading back needs
//! an identity file (or the same passphrase), which the daemon only needs for heal, verify
//! and drills. Blob names are the content's sha256, or an HMAC of it under `blob_key_file`
//! so that a name no longer tells whether a known file is in the backup.

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use age::secrecy::SecretString;
use futures::AsyncWriteExt as _;
use hmac::{KeyInit, Mac};
use tokio::io::{AsyncRead, DuplexStream, ReadBuf};
use tokio::task::JoinHandle;
use tokio_util::compat::{
    FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt,
};

use crate::codec::Reader;

/// What the manifest's `encryption` field says for age-encrypted backups.
pub const SCHEME: &str = "age";
/// Appended to the key of every encrypted object.
pub const SUFFIX: &str = ".age";
/// The first bytes of every age file.
pub const MAGIC: &[u8] = b"age-encryption.org/v1";

const BUF: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error(
        "{what} is encrypted with age and no identity was given; pass --identity FILE (the age identity file whose public key is among the job's recipients), or set encryption.identity_file (or passphrase_file) in the job"
    )]
    NoIdentity { what: String },
    #[error(
        "cannot decrypt {what}: it is not encrypted to any identity in {keys}; check that the identity matches one of the job's recipients"
    )]
    WrongIdentity { what: String, keys: String },
    #[error("cannot decrypt {what}: the passphrase in {keys} is not the one it was encrypted with")]
    WrongPassphrase { what: String, keys: String },
    #[error(
        "{what} is not an age file ({reason}); it was not written by an encrypting job, or is damaged"
    )]
    NotAge { what: String, reason: String },
    #[error("cannot decrypt {what}: {source}")]
    Decrypt {
        what: String,
        #[source]
        source: age::DecryptError,
    },
    #[error("cannot encrypt")]
    Encrypt(#[source] age::EncryptError),
    #[error("reading {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// The public side: who a job's backups are encrypted to.
pub struct Sealer {
    recipients: Vec<Box<dyn age::Recipient + Send + Sync>>,
    passphrase: bool,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({})", self.describe())
    }
}

impl Sealer {
    /// Recipients as age writes them (`age1…`), one per entry; `what` names each for errors.
    pub fn recipients(list: &[(String, String)]) -> Result<Sealer, Vec<String>> {
        let mut recipients: Vec<Box<dyn age::Recipient + Send + Sync>> = Vec::new();
        let mut problems = Vec::new();
        for (what, text) in list {
            match age::x25519::Recipient::from_str(text) {
                Ok(r) => recipients.push(Box::new(r)),
                Err(_) if text.starts_with("ssh-") => problems.push(format!(
                    "{what}: \"{}\" is an SSH key; stowage encrypts to age X25519 recipients (age1…); make one with age-keygen",
                    short(text)
                )),
                Err(_) => problems.push(format!(
                    "{what}: \"{}\" is not an age recipient (age1… as printed by age-keygen -y)",
                    short(text)
                )),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Sealer {
            recipients,
            passphrase: false,
        })
    }

    /// "passphrase" or "N recipient(s)", for check-config.
    pub fn describe(&self) -> String {
        if self.passphrase {
            "passphrase".to_string()
        } else {
            format!("{} recipient(s)", self.recipients.len())
        }
    }

    pub fn passphrase(passphrase: &str) -> Sealer {
        Sealer {
            recipients: vec![Box::new(age::scrypt::Recipient::new(SecretString::from(
                passphrase.to_string(),
            )))],
            passphrase: true,
        }
    }

    fn encryptor(&self) -> Result<age::Encryptor, CryptError> {
        age::Encryptor::with_recipients(
            self.recipients
                .iter()
                .map(|r| r.as_ref() as &dyn age::Recipient),
        )
        .map_err(CryptError::Encrypt)
    }
}

/// The recipients of an age recipients file: one per line, `#` comments and blank lines
/// skipped.
pub fn recipients_in(text: &str, file: &str) -> Vec<(String, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (format!("{file} line {}", i + 1), l.to_string()))
        .collect()
}

/// The secret side: what reads a job's backups back.
pub enum Keys {
    Identities {
        ids: Vec<age::x25519::Identity>,
        from: String,
    },
    Passphrase {
        id: age::scrypt::Identity,
        from: String,
    },
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({})", self.from())
    }
}

impl Keys {
    /// An age identity file (`AGE-SECRET-KEY-1…` lines, as age-keygen writes them).
    pub fn identity_file(text: &str, from: &str) -> Result<Keys, String> {
        let mut ids = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            match age::x25519::Identity::from_str(l) {
                Ok(id) => ids.push(id),
                Err(_) => {
                    return Err(format!(
                        "{from} line {}: not an age identity (AGE-SECRET-KEY-1… as written by age-keygen)",
                        i + 1
                    ));
                }
            }
        }
        if ids.is_empty() {
            return Err(format!(
                "{from}: no identity in it (expected AGE-SECRET-KEY-1… lines as written by age-keygen)"
            ));
        }
        Ok(Keys::Identities {
            ids,
            from: from.to_string(),
        })
    }

    /// Read an identity file given on the command line.
    pub fn read_identity_file(path: &std::path::Path) -> Result<Keys, String> {
        let from = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "--identity {from}: cannot read it: {}",
                crate::units::io_reason(&e)
            )
        })?;
        Keys::identity_file(&text, &from)
    }

    pub fn passphrase(passphrase: &str, from: &str) -> Keys {
        Keys::Passphrase {
            id: age::scrypt::Identity::new(SecretString::from(passphrase.to_string())),
            from: from.to_string(),
        }
    }

    fn from(&self) -> &str {
        match self {
            Keys::Identities { from, .. } | Keys::Passphrase { from, .. } => from,
        }
    }

    fn identities(&self) -> Vec<&dyn age::Identity> {
        match self {
            Keys::Identities { ids, .. } => ids.iter().map(|i| i as &dyn age::Identity).collect(),
            Keys::Passphrase { id, .. } => vec![id as &dyn age::Identity],
        }
    }
}

/// A job's encryption, validated: recipients for backups, keys (when configured) for
/// reading them back in the daemon, and the optional blob-name key.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub sealer: Arc<Sealer>,
    pub keys: Option<Arc<Keys>>,
    blob_key: Option<Arc<crate::secret::Secret>>,
}

impl Encryption {
    pub fn new(
        sealer: Sealer,
        keys: Option<Keys>,
        blob_key: Option<crate::secret::Secret>,
    ) -> Encryption {
        Encryption {
            sealer: Arc::new(sealer),
            keys: keys.map(Arc::new),
            blob_key: blob_key.map(Arc::new),
        }
    }

    /// The name of the blob holding content with this sha256: HMAC-SHA256 under the blob
    /// key when there is one (names reveal nothing without it), else the sha256 itself.
    pub fn blob_name(&self, sha256: &str) -> String {
        match &self.blob_key {
            Some(k) => blob_hmac(k.expose().as_bytes(), sha256),
            None => sha256.to_string(),
        }
    }
}

/// The key that authenticates a job's manifests (`auth_key_file`): HMAC-SHA256, held by
/// the writer and every reader. Whoever can only write to a destination cannot make a
/// manifest that passes, so a backup proves it was written by a holder of the key.
pub struct AuthKey {
    secret: crate::secret::Secret,
    id: String,
    from: String,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthKey({}, key id {})", self.from, self.id)
    }
}

/// Below this, a key file holds too little to stop a guess: `head -c 32 /dev/urandom |
/// base64` writes 44 characters.
pub const AUTH_KEY_MIN: usize = 32;

impl AuthKey {
    /// `secret` is the key file's text (trailing newline removed); `from` names the file.
    pub fn new(secret: crate::secret::Secret, from: &str) -> Result<AuthKey, String> {
        let n = secret.expose().len();
        if n < AUTH_KEY_MIN {
            return Err(format!(
                "{from}: {n} bytes of key material, fewer than {AUTH_KEY_MIN}; make a key with `head -c 32 /dev/urandom | base64 > FILE`"
            ));
        }
        use sha2::Digest;
        let digest = sha2::Sha256::digest(secret.expose().as_bytes());
        Ok(AuthKey {
            id: hex::encode(&digest[..4]),
            secret,
            from: from.to_string(),
        })
    }

    /// First 8 hex digits of the key's sha256: names the key in a manifest (so a reader
    /// with another key says so) without giving anything of it away.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The file the key was read from, for messages.
    pub fn from(&self) -> &str {
        &self.from
    }

    fn mac(&self) -> hmac::Hmac<sha2::Sha256> {
        <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(self.secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"))
    }

    /// HMAC-SHA256 of `body`, hex.
    pub fn sign(&self, body: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `mac_hex` is the HMAC of `body`, compared in constant time.
    pub fn verify(&self, body: &[u8], mac_hex: &str) -> bool {
        let Ok(tag) = hex::decode(mac_hex) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(&tag).is_ok()
    }
}

fn blob_hmac(key: &[u8], sha256: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    mac.update(sha256.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Encrypt `r` to the sealer's recipients, streamed: a task writes the age file into a
/// pipe that the returned reader drains. A failure of `r` (or of the encryption) surfaces
/// as an error where the reader would otherwise end, never as a short, valid-looking end.
pub fn seal(r: Reader, sealer: Arc<Sealer>) -> Reader {
    let (w, rd) = tokio::io::duplex(BUF);
    let task = tokio::spawn(async move {
        let enc = if sealer.passphrase {
            // scrypt takes about a second of CPU: off the async workers.
            tokio::task::spawn_blocking(move || sealer.encryptor())
                .await
                .map_err(io::Error::other)?
        } else {
            sealer.encryptor()
        }
        .map_err(io::Error::other)?;
        let mut out = enc.wrap_async_output(w.compat_write()).await?;
        let input = futures::io::BufReader::with_capacity(BUF, r.compat());
        futures::io::copy_buf(input, &mut out).await?;
        out.close().await?;
        Ok(())
    });
    Box::new(Sealed {
        inner: rd,
        task: Some(task),
    })
}

struct Sealed {
    inner: DuplexStream,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl AsyncRead for Sealed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before {
            return Poll::Ready(Ok(()));
        }
        // The pipe ended: the writer's outcome decides whether this is the end.
        if let Some(task) = this.task.as_mut() {
            let r = ready!(Pin::new(task).poll(cx));
            this.task = None;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(e) => return Poll::Ready(Err(io::Error::other(e))),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// Open an age file for reading: the header is read and a key found before this returns,
/// so a wrong identity fails here, before a restore touches its target.
pub async fn open(raw: Reader, keys: Option<&Arc<Keys>>, what: &str) -> Result<Reader, CryptError> {
    let Some(keys) = keys else {
        return Err(CryptError::NoIdentity {
            what: what.to_string(),
        });
    };
    let input = futures::io::BufReader::with_capacity(BUF, raw.compat());
    let d = age::Decryptor::new_async_buffered(input)
        .await
        .map_err(|e| classify(e, what, keys))?;
    let reader = if matches!(keys.as_ref(), Keys::Passphrase { .. }) {
        let k = keys.clone();
        tokio::task::spawn_blocking(move || d.decrypt_async(k.identities().into_iter()))
            .await
            .map_err(|e| CryptError::Io {
                what: what.to_string(),
                source: io::Error::other(e),
            })?
    } else {
        d.decrypt_async(keys.identities().into_iter())
    }
    .map_err(|e| classify(e, what, keys))?;
    Ok(Box::new(reader.compat()))
}

fn classify(e: age::DecryptError, what: &str, keys: &Keys) -> CryptError {
    let what = what.to_string();
    let from = keys.from().to_string();
    match e {
        age::DecryptError::KeyDecryptionFailed
        | age::DecryptError::DecryptionFailed
        | age::DecryptError::NoMatchingKeys
            if matches!(keys, Keys::Passphrase { .. }) =>
        {
            CryptError::WrongPassphrase { what, keys: from }
        }
        age::DecryptError::NoMatchingKeys => CryptError::WrongIdentity { what, keys: from },
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => CryptError::NotAge {
            what,
            // age's text for an unknown format runs on a second line ("have you tried
            // upgrading…"): messages here are one line, as logs and summaries read them.
            reason: e
                .to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .trim_end_matches('.')
                .to_lowercase(),
        },
        age::DecryptError::Io(source) => CryptError::Io { what, source },
        e => CryptError::Decrypt { what, source: e },
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 24 {
        format!("{}…", s.chars().take(24).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use tokio::io::AsyncReadExt;

    fn pair() -> (Sealer, Keys) {
        let id = age::x25519::Identity::generate();
        let sealer = Sealer::recipients(&[("r".into(), id.to_public().to_string())])
            .expect("a valid recipient");
        let keys = Keys::identity_file(id.to_string().expose_secret(), "key.txt").expect("keys");
        (sealer, keys)
    }

    async fn read_all(mut r: Reader) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn round_trip_streams_large_input() {
        let (sealer, keys) = pair();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let sealed = read_all(seal(
            Box::new(std::io::Cursor::new(data.clone())),
            Arc::new(sealer),
        ))
        .await
        .expect("seal");
        assert!(sealed.starts_with(MAGIC));
        assert!(!sealed.windows(64).any(|w| w == &data[1000..1064]));
        let keys = Arc::new(keys);
        let opened = open(Box::new(std::io::Cursor::new(sealed)), Some(&keys), "x")
            .await
            .expect("open");
        assert_eq!(read_all(opened).await.expect("decrypt"), data);
    }

    #[tokio::test]
    async fn a_failing_input_is_an_error_not_a_short_file() {
        let (sealer, _) = pair();
        let failing = tokio_util::io::StreamReader::new(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err(io::Error::other("dump died")),
        ]));
        let e = read_all(seal(Box::new(failing), Arc::new(sealer)))
            .await
            .expect_err("must fail");
        assert!(e.to_string().contains("dump died"), "{e}");
    }

    #[tokio::test]
    async fn wrong_identity_missing_identity_and_truncation_are_named() {
        let (sealer, _) = pair();
        let (_, other) = pair();
        let sealed = read_all(seal(
            Box::new(std::io::Cursor::new(b"secret rows".to_vec())),
            Arc::new(sealer),
        ))
        .await
        .expect("seal");
        let other = Arc::new(other);
        let e = open(
            Box::new(std::io::Cursor::new(sealed.clone())),
            Some(&other),
            "app/X/db.pgdump.zst.age",
        )
        .await
        .err()
        .expect("wrong identity");
        assert!(matches!(e, CryptError::WrongIdentity { .. }), "{e}");
        assert!(e.to_string().contains("app/X/db.pgdump.zst.age"), "{e}");
        let e = open(Box::new(std::io::Cursor::new(sealed)), None, "o")
            .await
            .err()
            .expect("no identity");
        assert!(e.to_string().contains("--identity"), "{e}");
        let e = open(
            Box::new(std::io::Cursor::new(b"(\xb5/\xfd junk".to_vec())),
            Some(&other),
            "o",
        )
        .await
        .err()
        .expect("not age");
        assert!(matches!(e, CryptError::NotAge { .. }), "{e}");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
        // A damaged header (what a flipped byte early in a small blob gives) reads as an
        // unknown format, whose age text has a second line.
        let e = open(
            Box::new(std::io::Cursor::new(
                b"age-encryption.org/v9\n-> X25519 x\n".to_vec(),
            )),
            Some(&other),
            "o",
        )
        .await
        .err()
        .expect("not age");
        assert!(!e.to_string().contains('\n'), "one line: {e}");
    }

    #[tokio::test]
    async fn truncated_ciphertext_fails() {
        let (sealer, keys) = pair();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
        let mut sealed = read_all(seal(Box::new(std::io::Cursor::new(data)), Arc::new(sealer)))
            .await
            .expect("seal");
        sealed.truncate(sealed.len() - 100);
        let keys = Arc::new(keys);
        let r = open(Box::new(std::io::Cursor::new(sealed)), Some(&keys), "o")
            .await
            .expect("header intact");
        assert!(read_all(r).await.is_err());
    }

    #[tokio::test]
    async fn passphrase_round_trip_and_wrong_passphrase() {
        let mut r = age::scrypt::Recipient::new(SecretString::from("pw".to_string()));
        // Keep the unit test quick: the real recipient calibrates to about a second.
        r.set_work_factor(10);
        let sealer = Sealer {
            recipients: vec![Box::new(r)],
            passphrase: true,
        };
        let sealed = read_all(seal(
            Box::new(std::io::Cursor::new(b"rows".to_vec())),
            Arc::new(sealer),
        ))
        .await
        .expect("seal");
        let good = Arc::new(Keys::passphrase("pw", "pass.txt"));
        let r = open(
            Box::new(std::io::Cursor::new(sealed.clone())),
            Some(&good),
            "o",
        )
        .await
        .expect("open");
        assert_eq!(read_all(r).await.expect("read"), b"rows");
        let bad = Arc::new(Keys::passphrase("nope", "pass.txt"));
        let e = open(Box::new(std::io::Cursor::new(sealed)), Some(&bad), "o")
            .await
            .err()
            .expect("wrong passphrase");
        assert!(e.to_string().contains("passphrase"), "{e}");
    }

    #[test]
    fn recipients_are_checked_and_named() {
        let e = Sealer::recipients(&[
            ("encryption.recipients[0]".into(), "age1nope".into()),
            ("encryption.recipients[1]".into(), "ssh-ed25519 AAAA".into()),
        ])
        .expect_err("invalid");
        assert!(
            e[0].starts_with("encryption.recipients[0]: \"age1nope\" is not an age recipient"),
            "{e:?}"
        );
        assert!(e[1].contains("SSH key"), "{e:?}");
        let listed = recipients_in("# team\n\nage1abc\n", "/run/r");
        assert_eq!(
            listed,
            vec![("/run/r line 3".to_string(), "age1abc".to_string())]
        );
    }

    #[test]
    fn blob_names_are_keyed_only_with_a_blob_key() {
        let (sealer, _) = pair();
        let plain = Encryption::new(sealer, None, None);
        let sha = "ab".repeat(32);
        assert_eq!(plain.blob_name(&sha), sha);
        let (sealer, _) = pair();
        let keyed = Encryption::new(sealer, None, Some(crate::secret::Secret::new("k".into())));
        let name = keyed.blob_name(&sha);
        assert_eq!(name.len(), 64);
        assert_ne!(name, sha);
        assert_eq!(name, keyed.blob_name(&sha), "deterministic");
    }
}
