//! Receivers for the notification tests: a real SMTP server (Python's aiosmtpd, from the venv
//! tests/setup.sh makes) that saves every message it accepts, and an HTTP server that records
//! each request's line, headers and body (for ntfy).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::tools::{SETUP_HINT, free_port, home_dir, is_executable};

/// The server: saves each message as `NNNN.json` (envelope, login, whether TLS was on, the
/// raw message) in the directory it is given. Environment: `SMTP_MODE` plain | starttls |
/// tls, `SMTP_CERT`/`SMTP_KEY`, `SMTP_USER`/`SMTP_PASSWORD` (then AUTH is required).
const SERVER: &str = r#"
import json, os, ssl, sys, time, warnings
# AUTH without TLS on loopback is what the plain-mode test means to do.
warnings.simplefilter("ignore")
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

port, outdir = int(sys.argv[1]), sys.argv[2]
mode = os.environ.get("SMTP_MODE", "plain")
user, password = os.environ.get("SMTP_USER"), os.environ.get("SMTP_PASSWORD")

class Handler:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Handler.n += 1
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        rec = {"from": envelope.mail_from, "to": envelope.rcpt_tos, "login": login,
               "tls": server.transport.get_extra_info("ssl_object") is not None,
               "data": envelope.content.decode("utf-8", "replace")}
        tmp = os.path.join(outdir, ".tmp")
        with open(tmp, "w") as f:
            json.dump(rec, f)
        os.rename(tmp, os.path.join(outdir, "%04d.json" % Handler.n))
        return "250 OK"

def check(server, session, envelope, mechanism, auth_data):
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user
          and auth_data.password.decode() == password)
    return AuthResult(success=ok, handled=False, auth_data=auth_data)

kw = {}
ctx = None
if mode != "plain":
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(os.environ["SMTP_CERT"], os.environ["SMTP_KEY"])
if mode == "starttls":
    kw.update(tls_context=ctx, require_starttls=True)
if mode == "tls":
    kw.update(ssl_context=ctx)
if user:
    # Only STARTTLS counts as TLS for aiosmtpd's auth_require_tls: a TLS port needs it off.
    kw.update(authenticator=check, auth_required=True, auth_require_tls=(mode == "starttls"))
c = Controller(Handler(), hostname="127.0.0.1", port=port, ready_timeout=20, **kw)
c.start()
print("ready", flush=True)
while True:
    time.sleep(3600)
"#;

/// The venv python with aiosmtpd (`$STOWAGE_PYTHON`, else the venv of tests/setup.sh).
fn python() -> PathBuf {
    let p = std::env::var_os("STOWAGE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| home_dir().join(".cache/stowage-tools/venv/bin/python"));
    assert!(
        is_executable(&p),
        "{} not found: the notification tests need Python with aiosmtpd; {SETUP_HINT}",
        p.display()
    );
    let ok = Command::new(&p)
        .args(["-c", "import aiosmtpd"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "aiosmtpd is not installed for {}: the notification tests need it; {SETUP_HINT}",
        p.display()
    );
    p
}

/// One received message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    pub login: Option<String>,
    pub tls: bool,
    /// The raw message: headers, then the body.
    pub data: String,
}

impl Mail {
    /// The unfolded value of header `name`.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let head = head.replace("\r\n ", " ").replace("\r\n\t", " ");
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// The body, quoted-printable soft breaks and escapes undone.
    pub fn body(&self) -> String {
        let body = self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        if self
            .header("Content-Transfer-Encoding")
            .is_some_and(|e| e.eq_ignore_ascii_case("quoted-printable"))
        {
            qp_decode(body)
        } else {
            body.replace("\r\n", "\n")
        }
    }
}

fn qp_decode(s: &str) -> String {
    let s = s.replace("=\r\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).replace("\r\n", "\n")
}

/// aiosmtpd on a free loopback port; killed on drop.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// `mode`: "plain", "starttls" or "tls" (then `cert`/`key` are the server's); `login`:
    /// the only user and password AUTH accepts, and then requires.
    pub fn start(mode: &str, tls: Option<(&Path, &Path)>, login: Option<(&str, &str)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("smtpd.py");
        std::fs::write(&script, SERVER).expect("write smtpd.py");
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).expect("mail dir");
        let port = free_port();
        let mut cmd = Command::new(python());
        cmd.arg(&script)
            .arg(port.to_string())
            .arg(&mail)
            .env("SMTP_MODE", mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((cert, key)) = tls {
            cmd.env("SMTP_CERT", cert).env("SMTP_KEY", key);
        }
        if let Some((u, p)) = login {
            cmd.env("SMTP_USER", u).env("SMTP_PASSWORD", p);
        }
        let mut child = cmd.spawn().expect("start aiosmtpd");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        assert_eq!(line.trim(), "ready", "aiosmtpd did not start");
        SmtpServer { port, dir, child }
    }

    /// Every message received so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .expect("read mail dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(p).expect("read mail")).expect("json");
                Mail {
                    from: v["from"].as_str().unwrap_or("").to_string(),
                    to: v["to"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|t| t.as_str())
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                    login: v["login"].as_str().map(String::from),
                    tls: v["tls"].as_bool().unwrap_or(false),
                    data: v["data"].as_str().unwrap_or("").to_string(),
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived (or `timeout`), and returns all of them.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Mail> {
        let start = Instant::now();
        loop {
            let m = self.mails();
            if m.len() >= n || start.elapsed() > timeout {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP request as received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP server on a loopback port recording every request; answers 200.
pub struct HttpRecorder {
    pub port: u16,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl HttpRecorder {
    pub fn start() -> HttpRecorder {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                if let Some(r) = read_request(conn) {
                    log.lock().expect("lock").push(r);
                }
            }
        });
        HttpRecorder { port, seen }
    }

    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

fn read_request(conn: std::net::TcpStream) -> Option<Request> {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = reader.read_exact(&mut body);
    let _ = reader
        .get_mut()
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
