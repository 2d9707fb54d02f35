//! S3 and S3-compatible stores. Streams go up as multipart uploads with a small, fixed
//! number of parts in flight, so memory stays at (max_in_flight + 1) × part_size whatever
//! the size of the backup, and nothing is ever staged on disk.

mod compat;
mod config;

pub use config::{
    Checksums, DEFAULT_MAX_IN_FLIGHT, DEFAULT_PART_SIZE, MIN_PART_SIZE, S3, S3Config,
    StaticCredentials,
};

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, Delete, GlacierJobParameters,
    ObjectIdentifier, ObjectLockEnabled, ObjectLockMode, ObjectLockRetention,
    ObjectLockRetentionMode, RestoreRequest, StorageClass, Tier,
};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::class::RetrievalTier;
use super::{Chunk, ObjectMeta, ObjectReader, OpenUpload, Retrieval, Storage, StorageError};
use crate::backend::{LockMode, part_size_for, push_parts};

/// What to do about an archived object that was read before its retrieval.
const RETRIEVE_HINT: &str = "run `stowage retrieve JOB ID --from DESTINATION`, then restore again once it is retrieved (hours; `stowage status` shows when)";

/// Attempts per S3 request (the first one included).
const S3_ATTEMPTS: u32 = 5;
/// Attempts per write of a backup's data or records (parts, puts, completing an upload).
/// Backoff is exponential (1 s doubling to 20 s) with full jitter, so five attempts may all
/// land within a second or two of each other: a three-second blip in the store failed a
/// whole backup in about one run in twenty. Ten attempts wait about a minute in all (never
/// under a few seconds in practice), which a store restarting or failing over outlasts.
const S3_WRITE_ATTEMPTS: u32 = 10;
/// Per attempt of one request (one part, at most `part_size`).
const S3_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

pub struct S3Storage {
    client: Client,
    cfg: S3Config,
}

/// The SDK's default HTTPS client (rustls on aws-lc, proxies from the environment), but trusting
/// the system's CA certificates as read for this client alone. The default reads them once
/// and keeps them for the process's life (`NATIVE_ROOTS` in aws-smithy-http-client, ~160 KB
/// on Debian): an idle daemon would hold them between backups. Read afresh per client, they
/// go with it; reading them takes a few milliseconds per run.
fn https_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{self, TlsContext};
    use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
    Builder::new().build_with_connector_fn(move |settings, components| {
        let mut conn = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ));
        conn.set_connector_settings(settings.cloned());
        if let Some(c) = components {
            conn.set_sleep_impl(c.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        let trust = system_trust_store();
        match TlsContext::builder().with_trust_store(trust).build() {
            Ok(ctx) => conn.tls_context(ctx).build(),
            // Never with a trust store: the builder only refuses other settings.
            Err(_) => conn.build(),
        }
    })
}

/// The system's CA certificates (`SSL_CERT_FILE`/`SSL_CERT_DIR` as well), as PEM, keeping only
/// those usable as a trust anchor: the SDK takes a custom certificate as given and panics on
/// one it cannot use, where for its own cache it skips those.
fn system_trust_store() -> aws_smithy_http_client::tls::TrustStore {
    use base64::Engine;
    let loaded = rustls_native_certs::load_native_certs();
    if !loaded.errors.is_empty() {
        tracing::warn!(
            "reading the system's CA certificates: {}",
            loaded
                .errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
    let mut store = aws_smithy_http_client::tls::TrustStore::empty().with_native_roots(false);
    for cert in &loaded.certs {
        if webpki::anchor_from_trusted_cert(cert).is_err() {
            continue;
        }
        let body = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
        let mut pem = String::with_capacity(body.len() + body.len() / 64 + 64);
        pem.push_str("-----BEGIN CERTIFICATE-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        store.add_pem_certificate(pem);
    }
    if loaded.certs.is_empty() {
        tracing::warn!(
            "no CA certificates found on this system: HTTPS to S3 will fail (install ca-certificates, or set SSL_CERT_FILE)"
        );
    }
    store
}

impl S3Storage {
    pub async fn new(cfg: S3Config) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // Without an explicit region the SDK would ask the EC2 metadata service, which is
        // slow and noisy everywhere but EC2; S3-compatible stores ignore the region anyway.
        let region = cfg
            .region
            .clone()
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".to_string());
        loader = loader.region(Region::new(region));
        // Transient failures (connection reset, 5xx, throttling) are retried per request —
        // per part of a multipart upload — with exponential backoff and full jitter, so a
        // blip does not fail a whole backup. A store that stays down fails a backup's write
        // after about a minute (`S3_WRITE_ATTEMPTS`), a read or probe after a few seconds;
        // the job's own `retries` take it from there.
        loader = loader.retry_config(retries(S3_ATTEMPTS)).timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                // A store that accepts a request and never answers would otherwise hold
                // the run (and every later one, skipped as overlapping) forever. Generous:
                // one part of a big upload over a slow uplink takes minutes.
                .operation_attempt_timeout(S3_ATTEMPT_TIMEOUT)
                .build(),
        );
        if let Some(c) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.expose().to_string(),
                None,
                None,
                "stowage-config",
            ));
        }
        loader = loader.http_client(https_client());
        let shared = loader.load().await;
        let mut b =
            aws_sdk_s3::config::Builder::from(&shared).force_path_style(cfg.force_path_style);
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep.clone());
        }
        if cfg.checksums == Checksums::WhenRequired {
            b = b
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
        S3Storage {
            client: Client::from_conf(b.build()),
            cfg,
        }
    }

    fn full_key(&self, key: &str) -> String {
        if self.cfg.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.cfg.prefix)
        }
    }

    fn endpoint(&self) -> String {
        self.cfg
            .endpoint
            .clone()
            .unwrap_or_else(|| "the AWS S3 endpoint".to_string())
    }

    /// Turn an SDK error into one line that says what failed and what to check.
    fn map_err<E>(
        &self,
        what: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StorageError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let bucket = &self.cfg.bucket;
        let e = match &err {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
                let cause = root_cause(&err);
                // Only picks the hint; the cause is quoted as it came.
                let hint = if cause.to_lowercase().contains("certificate") {
                    "the store's TLS certificate is not trusted here: give stowage the CA that \
                     signed it (mount it and set SSL_CERT_FILE=/path/to/ca.pem, or add it to \
                     /etc/ssl/certs)"
                } else {
                    "check the endpoint and the network"
                };
                StorageError::Unreachable(
                    format!("{what}: cannot reach {} ({cause}); {hint}", self.endpoint()).into(),
                )
            }
            SdkError::ConstructionFailure(_) => {
                let cause = root_cause(&err);
                if cause.to_lowercase().contains("credential") {
                    StorageError::Denied(format!(
                        "{what}: no AWS credentials found ({cause}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, mount ~/.aws/credentials, or set access_key_id and secret_access_key_file"
                    ).into())
                } else {
                    StorageError::Io(format!("{what}: {cause}").into())
                }
            }
            SdkError::ServiceError(se) => {
                let status = se.raw().status().as_u16();
                let code = err.code().unwrap_or("");
                let message = err.message().unwrap_or("");
                let detail = match (code, message) {
                    ("", "") => format!("HTTP {status}"),
                    (c, "") => format!("{c}, HTTP {status}"),
                    ("", m) => format!("{m}, HTTP {status}"),
                    (c, m) => format!("{c}: {m}, HTTP {status}"),
                };
                match status {
                    // S3 says 403 for an archived object: not a credentials problem.
                    _ if code == "InvalidObjectState" => StorageError::NotRetrieved(format!(
                        "{what}: the object is in {} and has not been retrieved ({detail}); {RETRIEVE_HINT}",
                        self.cfg
                            .storage_class
                            .filter(|c| c.needs_retrieval())
                            .map_or("an archive storage class", |c| c.as_str())
                    ).into()),
                    403 | 401 => StorageError::Denied(format!(
                        "{what}: access denied to bucket \"{bucket}\" ({detail}); check the credentials and the bucket policy"
                    ).into()),
                    404 if code == "NoSuchBucket" || code.is_empty() || code == "NotFound" => {
                        StorageError::NotFound(format!(
                            "{what}: bucket \"{bucket}\" does not exist at {} ({detail}); create it or fix the bucket name",
                            self.endpoint()
                        ).into())
                    }
                    404 => StorageError::NotFound(format!("{what}: not found ({detail})").into()),
                    301 => StorageError::Io(format!(
                        "{what}: bucket \"{bucket}\" is in another region ({detail}); set region to the bucket's region"
                    ).into()),
                    // The SDK has retried it already: the store is down or overloaded
                    // (501 is a store that lacks the operation, not one that is down).
                    500 | 502..=599 => StorageError::Unreachable(format!(
                        "{what}: {} answered {detail}, and again on retries; the store is down or overloaded",
                        self.endpoint()
                    ).into()),
                    _ => StorageError::Io(format!("{what}: {detail} ({})", root_cause(&err)).into()),
                }
            }
            _ => StorageError::Io(format!("{what}: {}", root_cause(&err)).into()),
        };
        e.caused_by(err)
    }

    /// HEAD of `full` (a full key): its storage class and retrieval status.
    async fn head(
        &self,
        full: &str,
    ) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, StorageError> {
        self.client
            .head_object()
            .bucket(&self.cfg.bucket)
            .key(full)
            .send()
            .await
            .map_err(|e| self.map_err(&format!("checking {full}"), e))
    }

    async fn abort(&self, key: &str, upload_id: &str) {
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            tracing::warn!(
                bucket = %self.cfg.bucket,
                key,
                "could not abort multipart upload {upload_id}: {}; a bucket lifecycle rule for incomplete uploads will remove it",
                root_cause(&e)
            );
        }
    }

    async fn multipart(
        &self,
        key: &str,
        first: Bytes,
        body: &mut mpsc::Receiver<Chunk>,
        buf: &mut BytesMut,
        total: &mut u64,
        in_class: bool,
    ) -> Result<(), StorageError> {
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key);
        if in_class && let Some(class) = &self.cfg.storage_class {
            create = create.storage_class(StorageClass::from(class.as_str()));
        }
        // Real S3 locks the object from these; some stores (moto) ignore them here, hence
        // the PutObjectRetention after completion as well.
        if let Some((mode, until)) = self.lock_now() {
            create = create
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until);
        }
        let created = match create
            .customize()
            .config_override(write_retries())
            .send()
            .await
        {
            Ok(out) => out.upload_id().map(str::to_string),
            Err(e) => match compat::upload_id_of_unparsed(&e) {
                Some(id) => Some(id),
                None => return Err(self.map_err("starting multipart upload", e)),
            },
        };
        let upload_id =
            created.ok_or_else(|| StorageError::Io("the store returned no upload id".into()))?;
        let result = self
            .upload_parts(key, &upload_id, first, body, buf, total)
            .await;
        if result.is_err() {
            self.abort(key, &upload_id).await;
        }
        result?;
        // Completed: no upload to abort now. A failure here fails the object's upload, and
        // the run's cleanup removes it like any other object of an unpublished backup.
        if let Some(lock) = self.cfg.object_lock {
            self.retain(key, lock.until(chrono::Utc::now())).await?;
        }
        Ok(())
    }

    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        body: &mut mpsc::Receiver<Chunk>,
        buf: &mut BytesMut,
        total: &mut u64,
    ) -> Result<(), StorageError> {
        let base = self.cfg.part_size as usize;
        let max_parts = self.cfg.max_parts;
        // Parts cut so far (the first is cut by the caller).
        let mut cut = 1u32;
        let mut in_flight: JoinSet<Result<CompletedPart, StorageError>> = JoinSet::new();
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut next_part = 1i32;
        let mut pending = std::collections::VecDeque::from([first]);
        let mut finished = false;
        loop {
            while let Some(part) = pending.pop_front() {
                while in_flight.len() >= self.cfg.max_in_flight {
                    done.push(join_one(&mut in_flight).await?);
                }
                in_flight.spawn(upload_part(
                    self.client.clone(),
                    self.cfg.bucket.clone(),
                    key.to_string(),
                    upload_id.to_string(),
                    next_part,
                    part,
                ));
                next_part += 1;
            }
            if finished {
                break;
            }
            match body.recv().await {
                Some(Chunk::Data(b)) => {
                    *total += b.len() as u64;
                    let size = part_size_for(cut + 1, base, max_parts);
                    let parts = push_parts(buf, &b, size);
                    cut += parts.len() as u32;
                    if cut > max_parts {
                        return Err(StorageError::Io(format!(
                            "{key}: the object outgrew {max_parts} parts of up to {} each; raise part_size",
                            crate::units::human_bytes(size as u64)
                        ).into()));
                    }
                    pending.extend(parts);
                }
                Some(Chunk::End) => {
                    finished = true;
                    if !buf.is_empty() {
                        pending.push_back(buf.split().freeze());
                    }
                }
                None => return Err(StorageError::Abandoned),
            }
            // A failed part should stop the upload now, not after the whole dump.
            while let Some(r) = in_flight.try_join_next() {
                done.push(flatten(r)?);
            }
        }
        while !in_flight.is_empty() {
            done.push(join_one(&mut in_flight).await?);
        }
        done.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .customize()
            .config_override(write_retries())
            .send()
            .await
            .map_err(|e| self.map_err("completing multipart upload", e))?;
        Ok(())
    }

    /// The lock headers of an object written now, on a destination with `object_lock`.
    fn lock_now(&self) -> Option<(ObjectLockMode, aws_sdk_s3::primitives::DateTime)> {
        let lock = self.cfg.object_lock?;
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        Some((mode, s3_time(lock.until(chrono::Utc::now()))))
    }

    /// `put` with the lock headers of an object written now, on a destination with
    /// `object_lock`. S3 refuses lock headers on a PutObject without Content-MD5 or a
    /// checksum, which `checksums = "when_required"` would otherwise leave out.
    /// A PUT of a JSON object (manifest, index, lock) in the default storage class.
    fn json_put(
        &self,
        key: &str,
        data: Bytes,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        self.client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .content_type("application/json")
            .body(ByteStream::from(data))
    }

    /// Send a PUT of a backup's write, with the writes' retries (`S3_WRITE_ATTEMPTS`).
    async fn send_put(
        &self,
        put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    ) -> Result<(), StorageError> {
        put.customize()
            .config_override(write_retries())
            .send()
            .await
            .map_err(|e| self.map_err("uploading", e))?;
        Ok(())
    }

    fn locked(
        &self,
        put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        match self.lock_now() {
            Some((mode, until)) => put
                .object_lock_mode(mode)
                .object_lock_retain_until_date(until)
                .checksum_algorithm(ChecksumAlgorithm::Crc32),
            None => put,
        }
    }

    /// PutObjectRetention of `full` (a full key) until `until`, in the configured mode.
    async fn retain(
        &self,
        full: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        let Some(lock) = self.cfg.object_lock else {
            return Ok(());
        };
        let mode = match lock.mode {
            LockMode::Governance => ObjectLockRetentionMode::Governance,
            LockMode::Compliance => ObjectLockRetentionMode::Compliance,
        };
        let retention = ObjectLockRetention::builder()
            .mode(mode)
            .retain_until_date(s3_time(until))
            .build();
        match self
            .client
            .put_object_retention()
            .bucket(&self.cfg.bucket)
            .key(full)
            .retention(retention)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // A lock that already lasts longer (a lower `days` now than when it was
                // written) cannot be shortened, and needs no extending.
                if let Ok(Some(held)) = self.lock_of(full).await
                    && held >= until
                {
                    return Ok(());
                }
                Err(self.map_err(&format!("locking {full} until {}", until.to_rfc3339()), e))
            }
        }
    }

    /// The retain-until date HeadObject reports for `full` (GetObjectRetention is not
    /// used: some stores, moto among them, answer it wrongly).
    async fn lock_of(
        &self,
        full: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        let head = match self.head(full).await {
            Ok(h) => h,
            Err(StorageError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if head.object_lock_mode().is_none() {
            return Ok(None);
        }
        Ok(head
            .object_lock_retain_until_date()
            .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())))
    }
}

/// Whole seconds, rounded up: S3 keeps a retain-until date to the second, and a lock
/// must never end before the date asked for.
fn s3_time(t: chrono::DateTime<chrono::Utc>) -> aws_sdk_s3::primitives::DateTime {
    let secs = t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0);
    aws_sdk_s3::primitives::DateTime::from_secs(secs)
}

fn flatten(
    r: Result<Result<CompletedPart, StorageError>, tokio::task::JoinError>,
) -> Result<CompletedPart, StorageError> {
    r.map_err(|e| StorageError::Io(format!("part upload task failed: {e}").into()).caused_by(e))?
}

async fn join_one(
    set: &mut JoinSet<Result<CompletedPart, StorageError>>,
) -> Result<CompletedPart, StorageError> {
    match set.join_next().await {
        Some(r) => flatten(r),
        None => Err(StorageError::Io("no part upload in flight".into())),
    }
}

async fn upload_part(
    client: Client,
    bucket: String,
    key: String,
    upload_id: String,
    number: i32,
    data: Bytes,
) -> Result<CompletedPart, StorageError> {
    let out = client
        .upload_part()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .part_number(number)
        .body(ByteStream::from(data))
        .customize()
        .config_override(write_retries())
        .send()
        .await
        .map_err(|e| {
            StorageError::Io(format!("uploading part {number} of {key}: {}", root_cause(&e)).into())
                .caused_by(e)
        })?;
    Ok(CompletedPart::builder()
        .part_number(number)
        .set_e_tag(out.e_tag().map(str::to_string))
        .build())
}

fn retries(attempts: u32) -> aws_config::retry::RetryConfig {
    aws_config::retry::RetryConfig::standard()
        .with_max_attempts(attempts)
        .with_initial_backoff(std::time::Duration::from_secs(1))
        .with_max_backoff(std::time::Duration::from_secs(20))
}

/// Per-request override for the writes of a running backup: more attempts than reads and
/// probes get (a `check-config --connect` against a dead endpoint should not take a minute).
fn write_retries() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().retry_config(retries(S3_WRITE_ATTEMPTS))
}

/// The innermost error's text: "connection refused (os error 111)" rather than the SDK's
/// "dispatch failure" wrapper.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = err;
    let mut text = cur.to_string();
    while let Some(next) = cur.source() {
        let t = next.to_string();
        if !t.is_empty() {
            text = t;
        }
        cur = next;
    }
    text.to_lowercase()
}

#[async_trait]
impl Storage for S3Storage {
    fn location(&self) -> String {
        if self.cfg.prefix.is_empty() {
            format!("s3://{}", self.cfg.bucket)
        } else {
            format!("s3://{}/{}", self.cfg.bucket, self.cfg.prefix)
        }
    }

    async fn preflight(&self) -> Result<(), StorageError> {
        let Err(e) = self
            .client
            .head_bucket()
            .bucket(&self.cfg.bucket)
            .send()
            .await
        else {
            return Ok(());
        };
        // A HEAD answer has no body, so S3's own error code (InvalidAccessKeyId,
        // SignatureDoesNotMatch, AccessDenied, …) is lost: ask again with a GET to learn it.
        // Only for refusals (4xx): a store that is down answers the GET no better, and
        // asking again would only repeat the retries.
        if let SdkError::ServiceError(se) = &e
            && se.err().code().is_none()
            && se.raw().status().is_client_error()
            && let Err(listed) = self
                .client
                .list_objects_v2()
                .bucket(&self.cfg.bucket)
                .max_keys(1)
                .send()
                .await
            && listed.code().is_some()
        {
            return Err(self.map_err("checking bucket", listed));
        }
        Err(self.map_err("checking bucket", e))
    }

    async fn put_stream(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.put_streamed(key, body, true).await
    }

    async fn put_stream_plain(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.put_streamed(key, body, false).await
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        // Manifests, indexes and locks stay in the default class even on archive tiers:
        // listing and planning a restore must read them without a retrieval request.
        self.send_put(self.json_put(key, data)).await
    }

    async fn put_record(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.send_put(self.locked(self.json_put(key, data))).await
    }

    async fn put_data(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(key))
            .body(ByteStream::from(data));
        if let Some(class) = &self.cfg.storage_class {
            put = put.storage_class(StorageClass::from(class.as_str()));
        }
        let put = self.locked(put);
        self.send_put(put).await
    }

    async fn locked_until(
        &self,
        key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.lock_of(&self.full_key(key)).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        self.retain(&self.full_key(key), until).await
    }

    async fn object_lock_enabled(&self) -> Result<Option<bool>, StorageError> {
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.cfg.bucket)
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled),
            )),
            Err(e) if e.code() == Some("ObjectLockConfigurationNotFoundError") => Ok(Some(false)),
            Err(e) => Err(self.map_err("reading the bucket's Object Lock configuration", e)),
        }
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let full = self.full_key(key);
        let out = match self
            .client
            .get_object()
            .bucket(&self.cfg.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.map_err(&format!("downloading {full}"), e))
        {
            Ok(out) => out,
            // Name the object's own class (the config may not say, or say another).
            Err(StorageError::NotRetrieved(mut why)) => {
                let class = self
                    .head(&full)
                    .await
                    .ok()
                    .and_then(|h| h.storage_class().map(|c| c.as_str().to_string()));
                if let Some(c) = class {
                    why.message = format!(
                        "downloading {full}: the object is in {c} and has not been retrieved; {RETRIEVE_HINT}"
                    );
                }
                return Err(StorageError::NotRetrieved(why));
            }
            Err(e) => return Err(e),
        };
        Ok(Box::new(out.body.into_async_read()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.list_paged(prefix, None, &mut |page| out.extend(page))
            .await?;
        Ok(out)
    }

    async fn list_pages(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        self.list_paged(prefix, None, each).await
    }

    async fn retrieval(&self, key: &str) -> Result<Retrieval, StorageError> {
        let full = self.full_key(key);
        let head = self.head(&full).await?;
        // By the object's own class: the config may say another, or none.
        let archived = head.storage_class().is_some_and(|c| {
            super::class::StorageClass::parse(c.as_str()).is_some_and(|c| c.needs_retrieval())
        });
        if !archived {
            return Ok(Retrieval::Readable);
        }
        // x-amz-restore: `ongoing-request="true"`, or `ongoing-request="false",
        // expiry-date="…"` once the copy is readable.
        Ok(match head.restore() {
            None => Retrieval::Archived,
            Some(r) if r.contains("ongoing-request=\"true\"") => Retrieval::Pending,
            Some(_) => Retrieval::Retrieved,
        })
    }

    async fn request_retrieval(
        &self,
        key: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<(), StorageError> {
        let full = self.full_key(key);
        let params = GlacierJobParameters::builder()
            .tier(Tier::from(tier.as_str()))
            .build()
            .map_err(|e| {
                StorageError::Io(format!("retrieval request for {full}: {e}").into()).caused_by(e)
            })?;
        let request = RestoreRequest::builder()
            .days(i32::try_from(days).unwrap_or(i32::MAX))
            .glacier_job_parameters(params)
            .build();
        match self
            .client
            .restore_object()
            .bucket(&self.cfg.bucket)
            .key(&full)
            .restore_request(request)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // Asked before and still under way: nothing more to do.
            Err(e) if e.code() == Some("RestoreAlreadyInProgress") => Ok(()),
            Err(e) if compat::lacks_operation(&e) => {
                let mut err = self.map_err(&format!("requesting the retrieval of {full}"), e);
                if let StorageError::Io(f) | StorageError::Unreachable(f) = &mut err {
                    f.message = format!("{}; {}", f.message, compat::NO_RESTORE_OBJECT);
                }
                Err(err)
            }
            Err(e) => Err(self.map_err(&format!("requesting the retrieval of {full}"), e)),
        }
    }

    async fn list_until(&self, prefix: &str, end: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.list_paged(prefix, Some(end), &mut |page| out.extend(page))
            .await?;
        Ok(out)
    }

    async fn open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StorageError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.cfg.bucket)
                .prefix(self.full_key(prefix))
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(id_marker.clone())
                .send()
                .await;
            let page = match page {
                Ok(p) => p,
                // Some S3-compatible stores cannot list uploads at all (or, like rclone,
                // refuse to list none); there is nothing to find then (their own cleanup,
                // or a lifecycle rule, must handle them).
                Err(e) if compat::lists_no_uploads(&e) => {
                    tracing::debug!(bucket = %self.cfg.bucket, "the store does not list multipart uploads");
                    return Ok(out);
                }
                Err(e) => return Err(self.map_err("listing open multipart uploads", e)),
            };
            for u in page.uploads() {
                let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                    continue;
                };
                let Some(key) = self.relative(key) else {
                    continue;
                };
                out.push(OpenUpload {
                    key,
                    id: id.to_string(),
                    initiated: u
                        .initiated()
                        .and_then(|t| chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())),
                });
            }
            if page.is_truncated() != Some(true) {
                return Ok(out);
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(out);
            }
        }
    }

    async fn abort_upload(&self, upload: &OpenUpload) -> Result<(), StorageError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.cfg.bucket)
            .key(self.full_key(&upload.key))
            .upload_id(&upload.id)
            .send()
            .await
            .map_err(|e| self.map_err("aborting a multipart upload", e))?;
        Ok(())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        for batch in keys.chunks(1000) {
            let ids = batch
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.full_key(k)).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    StorageError::Io(format!("building delete request: {e}").into()).caused_by(e)
                })?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| {
                    StorageError::Io(format!("building delete request: {e}").into()).caused_by(e)
                })?;
            let out = match self
                .client
                .delete_objects()
                .bucket(&self.cfg.bucket)
                .delete(delete)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if compat::deletes_one_by_one(&e) => {
                    tracing::debug!(
                        bucket = %self.cfg.bucket,
                        "the store refuses DeleteObjects ({}); deleting one object at a time",
                        root_cause(&e)
                    );
                    for key in batch {
                        self.delete_one(key).await?;
                    }
                    continue;
                }
                Err(e) => return Err(self.map_err("deleting", e)),
            };
            if let Some(first) = out.errors().first() {
                return Err(StorageError::Io(
                    format!(
                        "deleting {}: {} {}",
                        first.key().unwrap_or("?"),
                        first.code().unwrap_or(""),
                        first.message().unwrap_or("")
                    )
                    .into(),
                ));
            }
        }
        Ok(())
    }
}

impl S3Storage {
    /// DeleteObject of one key (relative to the prefix); one already gone is no error.
    async fn delete_one(&self, key: &str) -> Result<(), StorageError> {
        let full = self.full_key(key);
        match self
            .client
            .delete_object()
            .bucket(&self.cfg.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.raw().status().as_u16() == 404 => Ok(()),
            Err(e) => Err(self.map_err(&format!("deleting {full}"), e)),
        }
    }

    /// `in_class`: in the destination's storage class (backup data), or in the default
    /// class (what stowage reads to plan: file indexes).
    async fn put_streamed(
        &self,
        key: &str,
        mut body: mpsc::Receiver<Chunk>,
        in_class: bool,
    ) -> Result<u64, StorageError> {
        let key = self.full_key(key);
        let part_size = self.cfg.part_size as usize;
        let mut buf = BytesMut::with_capacity(part_size);
        let mut total = 0u64;
        // Small objects go up in one PutObject; the first full part switches to multipart.
        loop {
            match body.recv().await {
                Some(Chunk::Data(b)) => {
                    total += b.len() as u64;
                    let mut parts = push_parts(&mut buf, &b, part_size);
                    if !parts.is_empty() {
                        let first = parts.remove(0);
                        // Rare (a chunk bigger than a part): put the extra parts back in front.
                        if !parts.is_empty() {
                            let mut rest = BytesMut::new();
                            for p in &parts[..] {
                                rest.extend_from_slice(p);
                            }
                            rest.extend_from_slice(&buf);
                            buf = rest;
                        }
                        self.multipart(&key, first, &mut body, &mut buf, &mut total, in_class)
                            .await?;
                        return Ok(total);
                    }
                }
                Some(Chunk::End) => break,
                None => return Err(StorageError::Abandoned),
            }
        }
        let mut put = self
            .client
            .put_object()
            .bucket(&self.cfg.bucket)
            .key(&key)
            .body(ByteStream::from(buf.freeze()));
        if in_class && let Some(class) = &self.cfg.storage_class {
            put = put.storage_class(StorageClass::from(class.as_str()));
        }
        self.send_put(self.locked(put)).await?;
        Ok(total)
    }
}

impl S3Storage {
    /// Keys under `prefix`, in S3's (lexicographic) order, a page at a time; with `end`,
    /// paging stops at the first key at or after it.
    async fn list_paged(
        &self,
        prefix: &str,
        end: Option<&str>,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        let full_prefix = self.full_key(prefix);
        let strip = if self.cfg.prefix.is_empty() {
            0
        } else {
            self.cfg.prefix.len() + 1
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.cfg.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.map_err("listing", e))?;
            let mut out = Vec::with_capacity(page.contents().len());
            let mut past_end = false;
            for obj in page.contents() {
                if let Some(k) = obj.key()
                    && k.len() >= strip
                {
                    let key = &k[strip..];
                    if end.is_some_and(|e| key >= e) {
                        past_end = true;
                        break;
                    }
                    out.push(ObjectMeta {
                        key: key.to_string(),
                        size: obj.size().unwrap_or(0).max(0) as u64,
                        modified: obj.last_modified().and_then(|t| {
                            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
                        }),
                    });
                }
            }
            each(out);
            if past_end {
                break;
            }
        }
        Ok(())
    }
}

impl S3Storage {
    fn relative(&self, full: &str) -> Option<String> {
        if self.cfg.prefix.is_empty() {
            Some(full.to_string())
        } else {
            full.strip_prefix(&format!("{}/", self.cfg.prefix))
                .map(str::to_string)
        }
    }
}

