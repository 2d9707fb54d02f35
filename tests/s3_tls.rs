//! S3 over HTTPS with a private certificate authority, as a self-hosted store (MinIO, Garage,
//! SeaweedFS behind a reverse proxy) often has: stowage trusts the system's CA certificates,
//! and `SSL_CERT_FILE` names more. The S3 client builds that trust store itself for each run
//! (src/storage/s3.rs, `system_trust_store`) instead of the SDK's process-wide cache, so these
//! tests hold it to what the SDK did: trusted → a round trip; not trusted → the run fails,
//! naming the certificate, and nothing is published.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::{Job, S3Server, private_ca, run_stowage_in, text, toml_str};

/// Per command: a run that is refused retries its requests for a while first.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Bucket `bucket` on `s3`, made with the AWS CLI trusting `ca`.
fn create_bucket(s3: &S3Server, ca: &Path, bucket: &str) {
    let out = Command::new(common::aws_cli())
        .args(["--endpoint-url", &s3.endpoint(), "--ca-bundle"])
        .arg(ca)
        .args(["s3api", "create-bucket", "--bucket", bucket])
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_DEFAULT_REGION", s3.region())
        .output()
        .expect("run aws");
    assert!(out.status.success(), "create-bucket:\n{}", text(&out));
}

struct Stack {
    s3: S3Server,
    job: Job,
    ca: std::path::PathBuf,
    data: Vec<u8>,
}

fn stack() -> Stack {
    let job = Job::new("app");
    private_ca(job.dir());
    let ca = job.path("ca.pem");
    let s3 = S3Server::moto_tls(&job.path("server.pem"), &job.path("server.key"));
    create_bucket(&s3, &ca, "tls");
    let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    std::fs::write(job.path("data.bin"), &data).expect("write data");
    let source = format!(
        "type = \"command\"\nname = \"data\"\ndump = [\"cat\", {}]\n\
         restore = [\"sh\", \"-c\", \"cat > \\\"$STOWAGE_RESTORE_TARGET\\\"\"]\nextension = \"bin\"\n",
        toml_str(job.path("data.bin").display())
    );
    let job = job.source(&source).s3("s3", &s3, "tls", "").write();
    Stack { s3, job, ca, data }
}

/// The CA named by `SSL_CERT_FILE`: the backup goes up over HTTPS and comes back intact.
#[test]
fn a_private_ca_named_by_ssl_cert_file_is_trusted() {
    let st = stack();
    let trust: [(&str, &OsStr); 1] = [("SSL_CERT_FILE", st.ca.as_os_str())];
    let run = run_stowage_in(&st.job.config, ["run", "app"], &trust, TIMEOUT);
    assert!(run.status.success(), "run over HTTPS:\n{}", text(&run));
    let said = text(&run);
    let id = said
        .split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no backup id in:\n{said}"))
        .to_string();
    let back = st.job.path("restored.bin");
    let to = format!("data={}", back.display());
    let restore = run_stowage_in(
        &st.job.config,
        ["restore", "app", id.as_str(), "--to", to.as_str()],
        &trust,
        TIMEOUT,
    );
    assert!(
        restore.status.success(),
        "restore over HTTPS:\n{}",
        text(&restore)
    );
    assert!(
        std::fs::read(&back).expect("restored file") == st.data,
        "restored bytes differ"
    );
    assert!(st.s3.endpoint().starts_with("https://"));
}

/// Without it the server's certificate is not trusted: the run fails, says why, and publishes
/// nothing (a later trusted `list` sees no backup).
#[test]
fn an_untrusted_certificate_fails_the_run_and_publishes_nothing() {
    let st = stack();
    // No system CA signed the test CA; `SSL_CERT_DIR` at an empty directory replaces the
    // system store as well, so nothing here can vouch for the server.
    let empty = st.job.path("no-certs");
    std::fs::create_dir_all(&empty).expect("mkdir");
    let run = run_stowage_in(
        &st.job.config,
        ["run", "app"],
        &[("SSL_CERT_DIR", empty.as_os_str())],
        TIMEOUT,
    );
    let said = text(&run);
    assert!(!run.status.success(), "run must fail:\n{said}");
    assert!(
        said.contains("invalid peer certificate") && said.contains("SSL_CERT_FILE"),
        "the error names the certificate problem and the way out:\n{said}"
    );
    let trust: [(&str, &OsStr); 1] = [("SSL_CERT_FILE", st.ca.as_os_str())];
    let list = run_stowage_in(&st.job.config, ["list", "app"], &trust, TIMEOUT);
    assert!(list.status.success(), "list:\n{}", text(&list));
    assert!(
        common::parse_listing(&String::from_utf8_lossy(&list.stdout))
            .iter()
            .all(|(_, ids)| ids.is_empty()),
        "nothing published:\n{}",
        text(&list)
    );
}
