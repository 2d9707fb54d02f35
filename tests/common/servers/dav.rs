//! Servers for the destinations reached through OpenDAL: a WebDAV share (`rclone serve
//! webdav`, Debian's rclone) and Azure Blob Storage (Azurite, the Azure Storage emulator,
//! installed from npm by tests/setup.sh). Each on a random loopback port with its data in
//! a temp dir, killed with its process group on drop.
//!
//! Overrides: `STOWAGE_RCLONE` (an rclone binary), `STOWAGE_AZURITE_BLOB`.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::tools::{find_tool, free_port, home_dir, read_tail};

/// Azurite's documented development account and key (public: the emulator's own).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub const DAV_USER: &str = "stowage";
pub const DAV_PASSWORD: &str = "dav-test-password";

/// A child server process with its data and log in a temp dir.
pub struct Served {
    tmp: tempfile::TempDir,
    child: Option<Child>,
    port: u16,
    what: &'static str,
}

impl Served {
    /// Start `program args…` (with `{port}` and `{data}` replaced) until it listens.
    fn start(what: &'static str, program: &Path, args: &[&str]) -> Served {
        let mut errors = Vec::new();
        for _ in 0..5 {
            let tmp = tempfile::Builder::new()
                .prefix(&format!("stowage-{what}-"))
                .tempdir()
                .expect("temp dir");
            let data = tmp.path().join("data");
            std::fs::create_dir_all(&data).expect("data dir");
            let port = free_port();
            let log = std::fs::File::create(tmp.path().join("server.log")).expect("log file");
            let mut cmd = Command::new(program);
            for a in args {
                cmd.arg(
                    a.replace("{port}", &port.to_string())
                        .replace("{data}", &data.to_string_lossy()),
                );
            }
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .process_group(0);
            let child = cmd.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {what} ({}): {e}; run tests/setup.sh",
                    program.display()
                )
            });
            let mut served = Served {
                tmp,
                child: Some(child),
                port,
                what,
            };
            if served.wait_listening(Duration::from_secs(30)) {
                return served;
            }
            errors.push(served.log());
        }
        panic!(
            "{what} failed to start 5 times:\n{}",
            errors.join("\n----\n")
        );
    }

    fn wait_listening(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child) = &mut self.child
                && let Ok(Some(_)) = child.try_wait()
            {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the server keeps its data.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        format!(
            "--- {} log ---\n{}",
            self.what,
            read_tail(&self.tmp.path().join("server.log"), 4000)
        )
    }

    /// A file beside the server's data (a secret file for stowage).
    pub fn write_secret(&self, name: &str, value: &str) -> PathBuf {
        let p = self.tmp.path().join(name);
        std::fs::write(&p, value).expect("secret file");
        p
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `rclone serve webdav` with basic authentication; objects are plain files under
/// [`Served::data_dir`].
pub fn webdav() -> Served {
    let rclone = find_tool(
        "STOWAGE_RCLONE",
        "rclone",
        &[PathBuf::from("/usr/bin/rclone")],
    );
    Served::start(
        "webdav",
        &rclone,
        &[
            "serve",
            "webdav",
            "{data}",
            "--addr",
            "127.0.0.1:{port}",
            "--user",
            DAV_USER,
            "--pass",
            DAV_PASSWORD,
            "--config",
            "/dev/null",
        ],
    )
}

/// Azurite's blob service (no other services, no API version check: the SDK may be newer).
pub fn azurite() -> Served {
    let bin = find_tool(
        "STOWAGE_AZURITE_BLOB",
        "azurite-blob",
        &[home_dir().join(".cache/stowage-tools/npm/node_modules/.bin/azurite-blob")],
    );
    Served::start(
        "azurite",
        &bin,
        &[
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            "{port}",
            "--location",
            "{data}",
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
        ],
    )
}

/// The `[destinations.NAME]` body of a WebDAV destination on `server` (collection `dir`).
pub fn webdav_destination(server: &Served, dir: &str) -> String {
    let pw = server.write_secret("dav_password", DAV_PASSWORD);
    format!(
        "type = \"webdav\"\nurl = \"http://127.0.0.1:{}/{dir}\"\nusername = \"{DAV_USER}\"\npassword_file = {:?}\n",
        server.port(),
        pw
    )
}

/// The `[destinations.NAME]` body of an Azure Blob destination on Azurite, in `container`
/// (created by the test with [`create_container`]).
pub fn azblob_destination(server: &Served, container: &str) -> String {
    let key = server.write_secret("azure_key", AZURITE_KEY);
    format!(
        "type = \"azblob\"\naccount_name = \"{AZURITE_ACCOUNT}\"\ncontainer = \"{container}\"\nendpoint = \"http://127.0.0.1:{}/{AZURITE_ACCOUNT}\"\naccount_key_file = {:?}\n",
        server.port(),
        key
    )
}

/// Create `container` on Azurite (a Shared Key signed `PUT ?restype=container`): stowage
/// expects a destination's container to exist, as it does a bucket.
pub fn create_container(server: &Served, container: &str) {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    use std::io::{Read, Write};
    let date = chrono::Utc::now()
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string();
    let version = "2021-08-06";
    let resource = format!("/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container");
    let to_sign =
        format!("PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY)
        .expect("key");
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(&key).expect("hmac");
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut conn = TcpStream::connect(("127.0.0.1", server.port())).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{sig}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        server.port()
    )
    .expect("request");
    let mut raw = String::new();
    let _ = conn.read_to_string(&mut raw);
    assert!(
        raw.starts_with("HTTP/1.1 201"),
        "creating container {container} on Azurite: {raw}\n{}",
        server.log()
    );
}
