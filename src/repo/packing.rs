//! How a backup's objects are packed (compression, then encryption) and whether a job may
//! read a backup at all: what every reader (restore, heal, drill, download, verify, index
//! reads) asks before it unpacks a stored byte. Above codec and crypt, which only transform
//! streams, and manifest, whose claims it checks against the job's config.

use std::sync::Arc;

use crate::codec::{Compression, Reader, decompress};
use crate::crypt::{CryptError, Keys};

/// How to read a backup's objects back: its compression, and the age keys when it is
/// encrypted.
#[derive(Debug, Clone)]
pub struct Packing {
    pub compression: Compression,
    pub encrypted: bool,
    pub keys: Option<Arc<Keys>>,
}

/// What a job's config demands of every backup it reads, whatever the backup's manifest
/// says: the manifest is data from the destination, and whoever can write there can edit
/// it.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The job encrypts: a backup that says it is not is refused unless its manifest is
    /// authenticated (it was written before encryption was turned on).
    pub encrypted: bool,
    /// The job's `auth_key_file`: manifests without a valid MAC under it are refused.
    pub auth: Option<Arc<crate::crypt::AuthKey>>,
    /// `--trust-unauthenticated`: read such backups anyway, with a warning (disaster
    /// recovery).
    pub trust_unauthenticated: bool,
}

impl Expect {
    pub fn of(job: &crate::config::Job, trust_unauthenticated: bool) -> Expect {
        Expect {
            encrypted: job.encryption.is_some(),
            auth: job.auth_key.clone(),
            trust_unauthenticated,
        }
    }

    /// Whether a backup may be read: the one place that decides it, so every reader
    /// (restore, heal, drill, download, verify, index reads) refuses the same backups.
    pub fn admit(
        &self,
        m: &crate::repo::manifest::Manifest,
    ) -> Result<(), crate::repo::manifest::Refused> {
        use crate::repo::manifest::{Authenticity, Refused, manifest_key};
        let auth = m.authenticity(self.auth.as_deref());
        let key = manifest_key(&m.job, &m.id);
        if !auth.accepted() {
            let why = auth.describe(self.auth.as_deref());
            if !self.trust_unauthenticated {
                return Err(Refused::Unauthenticated {
                    key,
                    id: m.id.clone(),
                    why,
                });
            }
            tracing::warn!(
                job = %m.job,
                id = %m.id,
                "{key}: {why}; reading it anyway (--trust-unauthenticated)"
            );
        }
        if self.encrypted && m.encryption.as_deref() != Some(crate::crypt::SCHEME) {
            // An authenticated manifest was written by the job itself: a backup from
            // before encryption was turned on.
            if auth != Authenticity::Authentic {
                if !self.trust_unauthenticated {
                    return Err(Refused::NotEncrypted {
                        key,
                        id: m.id.clone(),
                        job: m.job.clone(),
                        says: m.encryption.clone(),
                    });
                }
                tracing::warn!(
                    job = %m.job,
                    id = %m.id,
                    "{key}: the job is configured to encrypt and this backup says it is not; reading it anyway (--trust-unauthenticated)"
                );
            }
        }
        Ok(())
    }
}

impl Packing {
    /// How to read backup `m` for a job that expects `expect`; Err when the job must not
    /// read it at all.
    pub fn of(
        m: &crate::repo::manifest::Manifest,
        expect: &Expect,
        keys: Option<Arc<Keys>>,
    ) -> Result<Packing, crate::repo::manifest::Refused> {
        expect.admit(m)?;
        Ok(Packing {
            compression: m.compression,
            encrypted: m.encryption.is_some(),
            keys,
        })
    }

    /// As stored, unchecked: only for reading the references a blob sweep keeps, which
    /// never reach a target and can only keep more.
    pub(crate) fn as_stored(
        m: &crate::repo::manifest::Manifest,
        keys: Option<Arc<Keys>>,
    ) -> Packing {
        Packing {
            compression: m.compression,
            encrypted: m.encryption.is_some(),
            keys,
        }
    }

    pub fn plain(compression: Compression) -> Packing {
        Packing {
            compression,
            encrypted: false,
            keys: None,
        }
    }

    /// Decrypt (when encrypted) and decompress `raw`, the stored bytes of `what`.
    pub async fn unpack(&self, raw: Reader, what: &str) -> Result<Reader, CryptError> {
        let r = if self.encrypted {
            crate::crypt::open(raw, self.keys.as_ref(), what).await?
        } else {
            raw
        };
        Ok(decompress(r, self.compression))
    }
}
