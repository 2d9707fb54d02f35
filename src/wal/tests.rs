//! The shipper on memory destinations that fail on command: what reaches each destination,
//! what stays in the spool, and what is sent again. `tests/wal_ship.rs` ships to real
//! destinations and fetches back through the binary.

use std::sync::Arc;

use tokio::io::AsyncReadExt;

use super::*;
use crate::config::Config;
use crate::repo::packing::Expect;
use crate::testkit::{Fault, MemoryStorage, Op};

const SEG1: &str = "000000010000000000000001";
const SEG2: &str = "000000010000000000000002";
const SEG3: &str = "000000010000000000000003";
const HISTORY: &str = "00000002.history";

struct Setup {
    dir: tempfile::TempDir,
    config: Config,
    stores: Vec<MemoryStorage>,
    destinations: Vec<(String, Arc<dyn Storage>)>,
}

impl Setup {
    /// Job `app` with source `db`, `job_keys` in its section, on memory destinations `a`, `b`.
    fn new(job_keys: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = String::new();
        for name in ["a", "b"] {
            toml.push_str(&format!(
                "[destinations.{name}]\ntype = \"local\"\npath = {:?}\n\n",
                dir.path().join(name)
            ));
        }
        toml.push_str(&format!(
            "[jobs.app]\nschedule = \"@daily\"\ndestinations = [\"a\", \"b\"]\n{job_keys}\n\n\
             [[jobs.app.sources]]\ntype = \"command\"\nname = \"db\"\ndump = [\"true\"]\n"
        ));
        let path = dir.path().join("stowage.toml");
        std::fs::write(&path, toml).expect("write the config");
        let config = crate::load::load_with_env(&path, false).expect("a valid config");
        std::fs::create_dir(dir.path().join("spool")).expect("spool");
        let stores = vec![MemoryStorage::new("a"), MemoryStorage::new("b")];
        let destinations = stores
            .iter()
            .zip(["a", "b"])
            .map(|(s, n)| (n.to_string(), Arc::new(s.clone()) as Arc<dyn Storage>))
            .collect();
        Setup {
            dir,
            config,
            stores,
            destinations,
        }
    }

    fn job(&self) -> &Job {
        &self.config.jobs["app"]
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn shipper(&self) -> Shipper<'_> {
        Shipper::new(
            self.job(),
            "db",
            &self.spool(),
            self.destinations.clone(),
            Duration::from_secs(10),
        )
    }

    fn put(&self, name: &str, data: &[u8]) {
        std::fs::write(self.spool().join(name), data).expect("write spool file");
    }

    fn spooled(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.spool())
            .expect("read spool")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Bytes that do not compress to nothing, different per `seed`.
/// A status channel nobody reads.
fn quiet() -> watch::Sender<WalStatus> {
    watch::channel(WalStatus::default()).0
}

fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The WAL file `name` as destination `st` holds it: its record, checked, and its content
/// unpacked (zstd, the job's default).
async fn read_back(st: &MemoryStorage, name: &str, expect: &Expect) -> (WalRecord, Vec<u8>) {
    let v = wal::read_record(st, "app", "db", name, expect)
        .await
        .expect("read record")
        .unwrap_or_else(|| panic!("no record of {name}"));
    let stored = st.object(&v.record.key).expect("object stored").data;
    assert_eq!(stored.len() as u64, v.record.size);
    assert_eq!(sha(&stored), v.record.sha256);
    let mut raw = Vec::new();
    crate::codec::decompress(
        Box::new(std::io::Cursor::new(stored.to_vec())),
        v.form.compression,
    )
    .read_to_end(&mut raw)
    .await
    .expect("decompress");
    (v.record, raw)
}

#[tokio::test]
async fn completed_files_reach_every_destination_then_leave_the_spool() {
    let s = Setup::new("");
    let files = [
        (SEG2, data(200_000, 2)),
        (SEG1, data(300_000, 1)),
        (
            HISTORY,
            b"1\t0/3000000\tno recovery target specified\n".to_vec(),
        ),
    ];
    for (name, bytes) in &files {
        s.put(name, bytes);
    }
    s.put("junk.txt", b"not WAL");
    s.put("000000010000000000000002.done", b"not WAL either");
    let mut shipper = s.shipper();
    // What a pass found waiting is announced before it ships: a shipper that falls
    // behind shows as lag while it works.
    let (tx, mut rx) = watch::channel(WalStatus::default());
    let out = shipper.pass(false, &tx).await;
    assert!(!out.failed, "{:?}", out.error);
    assert_eq!(out.pending, 0);
    assert!(rx.has_changed().unwrap_or(false));
    let announced = rx.borrow_and_update().clone();
    assert_eq!(announced.pending, 3, "{announced:?}");
    assert!(announced.oldest_unshipped.is_some(), "{announced:?}");
    assert_eq!(
        s.spooled(),
        vec!["000000010000000000000002.done", "junk.txt"]
    );
    for st in &s.stores {
        for (name, bytes) in &files {
            let (r, raw) = read_back(st, name, &Expect::default()).await;
            assert_eq!(raw, *bytes, "{name}");
            assert_eq!(r.raw_size, bytes.len() as u64);
            assert_eq!(r.raw_sha256, sha(bytes));
            assert_eq!(r.key, format!("app/wal/db/{name}.zst"));
            assert!(r.auth.is_none());
        }
        assert_eq!(
            wal::shipped(st, "app", "db").await.expect("list"),
            vec![SEG1, SEG2, HISTORY]
        );
        // The history file first, then segments in order, each object before its record.
        let writes = st.writes();
        let order: Vec<&str> = writes
            .iter()
            .filter(|k| !k.contains("/index/"))
            .map(String::as_str)
            .collect();
        assert_eq!(
            order,
            vec![
                "app/wal/db/00000002.history.zst",
                "app/wal/db/000000010000000000000001.zst",
                "app/wal/db/000000010000000000000002.zst",
            ]
        );
        for name in [HISTORY, SEG1, SEG2] {
            let obj = writes
                .iter()
                .position(|k| *k == format!("app/wal/db/{name}.zst"));
            let rec = writes
                .iter()
                .position(|k| *k == format!("app/wal/db/index/{name}.json"));
            assert!(obj < rec, "{name}: {writes:?}");
        }
    }
    let (tx, _rx) = watch::channel(WalStatus::default());
    shipper.publish(&tx, &out);
    let st = tx.borrow().clone();
    assert_eq!(st.last_shipped.as_deref(), Some(SEG2));
    assert_eq!(st.pending, 0);
    assert_eq!(st.lag(Utc::now()), Duration::ZERO);
}

/// A destination that fails gets the file on a later pass; the one that has it is not sent
/// it again, and the spool keeps the file until both hold it.
#[tokio::test]
async fn a_failing_destination_gets_the_file_later() {
    let s = Setup::new("");
    let bytes = data(100_000, 3);
    s.put(SEG3, &bytes);
    s.stores[1].fail(Fault::on(Op::PutStream).nth(1));
    let mut shipper = s.shipper();
    let (tx, _rx) = watch::channel(WalStatus::default());

    let out = shipper.pass(false, &quiet()).await;
    shipper.publish(&tx, &out);
    assert!(out.failed);
    assert_eq!(s.spooled(), vec![SEG3]);
    let status = tx.borrow().clone();
    assert_eq!(status.pending, 1);
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains(" b: ") || e.contains("to b")),
        "{status:?}"
    );
    assert!(status.oldest_unshipped.is_some());
    assert!(read_back(&s.stores[0], SEG3, &Expect::default()).await.1 == bytes);
    assert!(
        wal::read_record(&s.stores[1], "app", "db", SEG3, &Expect::default())
            .await
            .expect("read")
            .is_none()
    );

    let out = shipper.pass(false, &quiet()).await;
    shipper.publish(&tx, &out);
    assert!(!out.failed, "{:?}", out.error);
    assert!(s.spooled().is_empty());
    assert_eq!(
        read_back(&s.stores[1], SEG3, &Expect::default()).await.1,
        bytes
    );
    assert_eq!(s.stores[0].calls(Op::PutStream), 1, "a not sent it again");
    assert_eq!(s.stores[1].calls(Op::PutStream), 2);
    let status = tx.borrow().clone();
    assert_eq!((status.pending, status.last_error), (0, None));
}

/// A record that cannot be written leaves the file in the spool; the next pass sends the
/// object and its record again.
#[tokio::test]
async fn a_failed_record_sends_the_file_again() {
    let s = Setup::new("");
    s.put(SEG1, &data(10_000, 4));
    s.stores[0].fail(Fault::on(Op::PutRecord).nth(1));
    let mut shipper = s.shipper();
    assert!(shipper.pass(false, &quiet()).await.failed);
    assert_eq!(s.spooled(), vec![SEG1]);
    assert!(!shipper.pass(false, &quiet()).await.failed);
    assert!(s.spooled().is_empty());
    assert_eq!(s.stores[0].calls(Op::PutStream), 2);
    assert_eq!(s.stores[1].calls(Op::PutStream), 1);
    read_back(&s.stores[0], SEG1, &Expect::default()).await;
}

/// The partial segment ships when its content changed: a new object, the pointer to it,
/// the previous object deleted; unchanged, nothing is sent.
#[tokio::test]
async fn the_partial_segment_ships_when_it_changes() {
    let s = Setup::new("");
    let mut seg = vec![0u8; 16 << 20];
    seg[..5000].copy_from_slice(&data(5000, 5));
    let partial = format!("{SEG3}.partial");
    s.put(&partial, &seg);
    let mut shipper = s.shipper();
    let out = shipper.pass(true, &quiet()).await;
    assert!(!out.failed, "{:?}", out.error);
    assert!(out.partial_shipped.is_some());
    assert_eq!(s.spooled(), vec![partial.clone()], "the partial file stays");
    let pointer = |st: &MemoryStorage| {
        let p = st.object("app/wal/db/partial.json").expect("pointer");
        wal::decode(&p.data, None).expect("decode").0
    };
    let first = pointer(&s.stores[0]);
    assert_eq!(first.name, SEG3);
    assert_eq!(first.raw_size, 16 << 20);
    assert_eq!(first.raw_sha256, sha(&seg));
    assert!(
        first
            .key
            .starts_with(&format!("app/wal/db/partial/{SEG3}."))
    );
    assert!(
        first.size < 1 << 20,
        "the zero tail compresses: {}",
        first.size
    );

    let calls = s.stores[0].calls(Op::PutStream);
    assert!(!shipper.pass(true, &quiet()).await.failed);
    assert_eq!(
        s.stores[0].calls(Op::PutStream),
        calls,
        "unchanged: not sent"
    );

    tokio::time::sleep(Duration::from_millis(5)).await;
    seg[5000..9000].copy_from_slice(&data(4000, 6));
    s.put(&partial, &seg);
    assert!(!shipper.pass(true, &quiet()).await.failed);
    for st in &s.stores {
        let now = pointer(st);
        assert_ne!(now.key, first.key);
        assert_eq!(now.raw_sha256, sha(&seg));
        let objects: Vec<String> = st
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("app/wal/db/partial/"))
            .collect();
        assert_eq!(
            objects,
            vec![now.key.clone()],
            "the replaced one is deleted"
        );
    }

    // Once the segment is complete it ships whole, the partial file gone.
    std::fs::rename(s.spool().join(&partial), s.spool().join(SEG3)).expect("rename");
    assert!(!shipper.pass(true, &quiet()).await.failed);
    assert!(s.spooled().is_empty());
    assert_eq!(
        read_back(&s.stores[1], SEG3, &Expect::default()).await.1,
        seg
    );
}

/// With auth_key_file, records carry a MAC the reader checks; with encryption, objects are
/// age files.
#[tokio::test]
async fn records_are_signed_and_objects_encrypted_as_the_job_says() {
    use age::secrecy::ExposeSecret;
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("auth.key");
    std::fs::write(&key, "k".repeat(44)).expect("key");
    let id = age::x25519::Identity::generate();
    let identity = dir.path().join("id.txt");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).expect("id");
    let s = Setup::new(&format!(
        "auth_key_file = {:?}\nencryption = {{ recipients = [\"{}\"], identity_file = {:?} }}",
        key,
        id.to_public(),
        identity
    ));
    let bytes = data(50_000, 7);
    s.put(SEG1, &bytes);
    assert!(!s.shipper().pass(false, &quiet()).await.failed);
    let expect = Expect::of(s.job(), false);
    let v = wal::read_record(&s.stores[0], "app", "db", SEG1, &expect)
        .await
        .expect("authentic")
        .expect("found");
    assert!(v.record.auth.is_some());
    assert!(v.form.encrypted);
    assert_eq!(v.record.key, format!("app/wal/db/{SEG1}.zst.age"));
    let stored = s.stores[0].object(&v.record.key).expect("stored").data;
    assert!(stored.starts_with(b"age-encryption.org/v1"));
    let keys = s.job().encryption.as_ref().and_then(|e| e.keys.clone());
    let opened = crate::crypt::open(
        Box::new(std::io::Cursor::new(stored.to_vec())),
        keys.as_ref(),
        "t",
    )
    .await
    .expect("open");
    let mut raw = Vec::new();
    crate::codec::decompress(opened, v.form.compression)
        .read_to_end(&mut raw)
        .await
        .expect("read");
    assert_eq!(raw, bytes);
}

/// `ship` itself: runs until shutdown, then makes one last pass.
#[tokio::test]
async fn ship_runs_until_shutdown() {
    let s = Setup::new("");
    s.put(SEG1, &data(1000, 8));
    let (tx, mut rx) = watch::channel(WalStatus::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = s.job();
    let spool = s.spool();
    let shipping = ship(
        job,
        "db",
        &spool,
        || std::future::ready(s.destinations.clone()),
        Duration::from_secs(3600),
        &tx,
        async {
            let _ = stopped.await;
        },
    );
    let watching = async {
        rx.wait_for(|st| st.last_shipped.as_deref() == Some(SEG1))
            .await
            .expect("status");
        // Arrives while the shipper sleeps (an hour): shipped by the last pass.
        s.put(SEG2, &data(1000, 9));
        let _ = stop.send(());
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(shipping, watching)
    })
    .await
    .expect("ship returns after shutdown");
    assert!(s.spooled().is_empty());
    assert_eq!(tx.borrow().last_shipped.as_deref(), Some(SEG2));
}

/// Wait (20 s at most) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A quiet spool closes the destinations (an idle daemon does not keep an S3 client), the
/// next change opens them again, and the last pass after shutdown opens them too; what was
/// shipped before a close is not sent again after it.
#[tokio::test]
async fn quiet_closes_the_destinations_and_a_change_opens_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let s = Setup::new("");
    s.put(SEG1, &data(1000, 12));
    let opens = AtomicUsize::new(0);
    let open = || {
        opens.fetch_add(1, Ordering::SeqCst);
        std::future::ready(s.destinations.clone())
    };
    // Held only by the setup once the shipper has let go.
    let closed = || Arc::strong_count(&s.destinations[0].1) == 1;
    let (tx, mut rx) = watch::channel(WalStatus::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let job = s.job();
    let spool = s.spool();
    let mut shipper = Shipper::new(job, "db", &spool, open().await, Duration::from_secs(1));
    shipper.keep_open = Duration::from_millis(300);
    let shipping = keep_shipping(shipper, open, &tx, async {
        let _ = stopped.await;
    });
    let watching = async {
        rx.wait_for(|st| st.last_shipped.as_deref() == Some(SEG1))
            .await
            .expect("status");
        until("closed after the first file", closed).await;
        assert_eq!(opens.load(Ordering::SeqCst), 1);
        let puts = s.stores[0].calls(Op::PutStream);
        s.put(SEG2, &data(1000, 13));
        rx.wait_for(|st| st.last_shipped.as_deref() == Some(SEG2))
            .await
            .expect("status");
        assert_eq!(opens.load(Ordering::SeqCst), 2, "opened again for SEG2");
        assert_eq!(s.stores[0].calls(Op::PutStream), puts + 1, "SEG2 only");
        until("closed after the second file", closed).await;
        s.put(SEG3, &data(1000, 14));
        let _ = stop.send(());
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(shipping, watching);
    })
    .await
    .expect("ship returns after shutdown");
    assert!(s.spooled().is_empty(), "the last pass shipped SEG3");
    assert!(opens.load(Ordering::SeqCst) >= 3);
    assert!(closed());
}

/// Without a destination nothing leaves the spool.
#[tokio::test]
async fn no_destination_keeps_the_spool() {
    let s = Setup::new("");
    s.put(SEG1, &data(1000, 10));
    let mut shipper = Shipper::new(s.job(), "db", &s.spool(), Vec::new(), Duration::from_secs(10));
    let out = shipper.pass(true, &quiet()).await;
    assert!(out.failed);
    assert_eq!(s.spooled(), vec![SEG1]);
}

/// After a restart, a file whose record and object a destination already holds (the last
/// process died before emptying the spool) is not sent there again; one that differs is.
#[tokio::test]
async fn a_restart_does_not_send_again_what_is_there() {
    let s = Setup::new("");
    let bytes = data(20_000, 11);
    s.put(SEG1, &bytes);
    assert!(!s.shipper().pass(false, &quiet()).await.failed);
    let puts: Vec<usize> = s.stores.iter().map(|st| st.calls(Op::PutStream)).collect();
    // The spool file back, as if the process had died before removing it.
    s.put(SEG1, &bytes);
    // Destination b lost the object since.
    s.stores[1]
        .delete(&[format!("app/wal/db/{SEG1}.zst")])
        .await
        .expect("delete");
    assert!(!s.shipper().pass(false, &quiet()).await.failed);
    assert!(s.spooled().is_empty());
    assert_eq!(
        s.stores[0].calls(Op::PutStream),
        puts[0],
        "a holds it: not sent"
    );
    assert_eq!(
        s.stores[1].calls(Op::PutStream),
        puts[1] + 1,
        "b lost it: sent"
    );
    assert_eq!(
        read_back(&s.stores[1], SEG1, &Expect::default()).await.1,
        bytes
    );
}
