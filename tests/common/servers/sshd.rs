//! A throw-away OpenSSH server on a random loopback port, for SFTP destinations: its own
//! host key, one client key pair allowed to log in as the current user, the built-in SFTP
//! server, everything in a temp dir. Killed on `Drop`.
//!
//! Needs `sshd`, `ssh` and `ssh-keygen` (Debian: openssh-server, openssh-client); override
//! the server with `STOWAGE_SSHD`.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{describe, find_tool, free_port, read_tail};

const HINT: &str = "install openssh-server and openssh-client (Debian: apt-get install openssh-server openssh-client)";

pub fn sshd_bin() -> PathBuf {
    find_tool("STOWAGE_SSHD", "sshd", &[PathBuf::from("/usr/sbin/sshd")])
}

/// An `sshd -D` child process. Killed (SIGKILL) on drop.
pub struct SshServer {
    tmp: tempfile::TempDir,
    port: u16,
    user: String,
    child: Option<Child>,
}

impl SshServer {
    pub fn start() -> SshServer {
        let tmp = tempfile::Builder::new()
            .prefix("stowage-sshd-")
            .tempdir()
            .expect("temp dir for sshd");
        for key in ["host_key", "client_key"] {
            keygen(&tmp.path().join(key));
        }
        std::fs::copy(
            tmp.path().join("client_key.pub"),
            tmp.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        std::fs::create_dir_all(tmp.path().join("data")).expect("data dir");
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let user = current_user();
        let mut server = SshServer {
            tmp,
            port: 0,
            user,
            child: None,
        };
        let mut errors = Vec::new();
        for _ in 0..5 {
            match server.spawn(free_port()) {
                Ok(()) => return server,
                Err(e) => errors.push(e),
            }
        }
        panic!("sshd failed to start 5 times:\n{}", errors.join("\n----\n"));
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("sshd.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        read_tail(&self.log_path(), 4000)
    }

    fn spawn(&mut self, port: u16) -> Result<(), String> {
        let dir = self.tmp.path();
        let config = dir.join("sshd_config");
        let text = format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             PidFile {pid}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n\
             AllowUsers {user}\n\
             UsePAM no\n\
             Subsystem sftp internal-sftp\n\
             LogLevel VERBOSE\n",
            host_key = dir.join("host_key").display(),
            pid = dir.join("sshd.pid").display(),
            authorized = dir.join("authorized_keys").display(),
            user = self.user,
        );
        std::fs::write(&config, text).expect("write sshd_config");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("sshd log file");
        let mut child = Command::new(sshd_bin())
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .args(["-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn sshd: {e}; {HINT}"));
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait sshd") {
                return Err(format!(
                    "sshd on port {port} exited ({status}):\n{}",
                    self.log()
                ));
            }
            if self.greets() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "sshd on port {port} did not greet:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the port answers with an SSH banner.
    fn greets(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut banner = [0u8; 8];
        stream.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user the client key logs in as (the one running the tests).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The client's private key (0600).
    pub fn client_key(&self) -> PathBuf {
        self.tmp.path().join("client_key")
    }

    /// A directory on the server (this machine) to put backups in.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    /// The known_hosts line of this server: `[127.0.0.1]:PORT <its host key>`.
    pub fn known_hosts_line(&self) -> String {
        let key = std::fs::read_to_string(self.tmp.path().join("host_key.pub"))
            .expect("read host_key.pub");
        format!("[127.0.0.1]:{} {}", self.port, key.trim())
    }

    /// Write a known_hosts file holding this server's key to `path`.
    pub fn write_known_hosts(&self, path: &Path) {
        std::fs::write(path, format!("{}\n", self.known_hosts_line()))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// The keys of an SFTP destination on this server writing to `path`, with `known_hosts`
    /// as its known_hosts file.
    pub fn destination(&self, path: &Path, known_hosts: &Path) -> String {
        format!(
            "type = \"sftp\"\nhost = \"127.0.0.1\"\nport = {}\nuser = {:?}\nkey_file = {:?}\nknown_hosts = {:?}\npath = {:?}\n",
            self.port,
            self.user,
            self.client_key().display().to_string(),
            known_hosts.display().to_string(),
            path.display().to_string(),
        )
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A new ed25519 key pair without a passphrase at `path` and `path.pub`.
pub fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "stowage-test", "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("run ssh-keygen: {e}; {HINT}"));
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        describe(&out)
    );
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
