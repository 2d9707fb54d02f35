//! SFTP destinations against a real OpenSSH server (a private `sshd` on a loopback port,
//! writing into a directory of this machine, so the tests can look at what it holds):
//! backup and restore, retention, verify, host key checking and `check-config --connect`.

mod common;

use std::path::{Path, PathBuf};

use common::servers::sshd::{SshServer, keygen};
use common::{Job, JobBuilder, PgServer, list_tree, read_tree, seed_sample_db, toml_str};

/// A files source `uploads` with a few files in the job's directory.
fn with_uploads(builder: JobBuilder) -> (JobBuilder, PathBuf) {
    let uploads = builder.path("uploads");
    std::fs::create_dir_all(uploads.join("a/b")).expect("mkdir");
    for i in 0..5 {
        std::fs::write(
            uploads.join(format!("a/file-{i}.txt")),
            format!("file {i}\n").repeat(i * 1000 + 1),
        )
        .expect("write");
    }
    std::fs::write(uploads.join("a/b/deep.bin"), vec![7u8; 300_000]).expect("write");
    let builder = builder.source(&format!(
        "type = \"files\"\nname = \"uploads\"\npath = {}\n",
        toml_str(uploads.display())
    ));
    (builder, uploads)
}

/// A job `app` backing up a PostgreSQL database and a files source to the SFTP
/// destination `nas` (`extra` keys added to it), and where the destination's files are.
struct Stack {
    pg: PgServer,
    sshd: SshServer,
    job: Job,
    uploads: PathBuf,
    /// The destination's `path`, as seen on this machine.
    store: PathBuf,
}

fn stack(extra: &str) -> Stack {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 200);
    let sshd = SshServer::start();
    let store = sshd.data_dir().join("backups/stowage");
    let builder = Job::new("app");
    let known_hosts = builder.path("known_hosts");
    sshd.write_known_hosts(&known_hosts);
    let body = format!("{}{extra}", sshd.destination(&store, &known_hosts));
    let (builder, uploads) = with_uploads(builder.destination("nas", &body));
    let job = builder.postgres("db", &pg.url("app")).write();
    Stack {
        pg,
        sshd,
        job,
        uploads,
        store,
    }
}

#[test]
fn backup_restore_and_list_over_sftp() {
    let s = stack("");
    let id = s.job.backup();
    assert_eq!(s.job.ids("nas"), vec![id.clone()]);

    // Everything under the destination's path, in place, no temporary name left over.
    let stored = list_tree(&s.store);
    assert!(
        stored.contains(&format!("app/{id}/db.pgdump.zst")),
        "{stored:#?}"
    );
    assert!(
        stored
            .iter()
            .any(|f| f.contains("/blobs/") || f.starts_with("app/blobs")),
        "the files source's blobs: {stored:#?}"
    );
    assert!(
        !stored.iter().any(|f| f.ends_with(".partial")),
        "{stored:#?}\n{}",
        s.sshd.log()
    );
    // Objects only their owner can read.
    use std::os::unix::fs::PermissionsExt;
    let dump = s.store.join(format!("app/{id}/db.pgdump.zst"));
    let mode = std::fs::metadata(&dump).expect("dump").permissions().mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o} of {}", dump.display());

    // Restore into a fresh database and an empty directory: equal to the originals.
    let want = s.pg.table_checksums("app");
    assert!(want.len() >= 3, "{want:?}");
    s.pg.create_db("restored");
    let files_to = s.job.path("restored-uploads");
    std::fs::create_dir_all(&files_to).expect("mkdir");
    let (code, out) = s.job.stowage(&[
        "restore",
        "app",
        &id,
        "--from",
        "nas",
        "--to",
        &s.pg.url("restored"),
        "--files-to",
        files_to.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore failed:\n{out}\n{}", s.sshd.log());
    assert_eq!(s.pg.table_checksums("restored"), want);
    assert!(
        read_tree(&files_to) == read_tree(&s.uploads),
        "restored files differ"
    );
}

#[test]
fn retention_over_sftp_removes_the_oldest_backup() {
    let s = stack("retention = { keep_last = 2 }\n");
    let first = s.job.backup();
    let second = s.job.backup();
    let third = s.job.backup();
    let ids = s.job.ids("nas");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&second) && ids.contains(&third), "{ids:?}");
    assert!(
        !s.store.join("app").join(&first).exists(),
        "the first backup's directory is gone: {:#?}",
        list_tree(&s.store)
    );
    assert!(s.store.join("app").join(&second).is_dir());
}

#[test]
fn verify_over_sftp_finds_a_flipped_byte() {
    let s = stack("");
    let id = s.job.backup();
    let (code, out) = s.job.stowage(&["verify", "app", "--all"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("verify app {id} on nas: ok")),
        "{out}"
    );

    let dump = s.store.join(format!("app/{id}/db.pgdump.zst"));
    let mut bytes = std::fs::read(&dump).expect("read dump");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&dump, bytes).expect("write dump");
    let (code, out) = s.job.stowage(&["verify", "app", &id]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("db: app/{id}/db.pgdump.zst is corrupt")),
        "{out}"
    );
}

/// A job backing up files only to `nas` on `sshd`, with `known_hosts` as given.
fn files_job(sshd: &SshServer, known_hosts: impl FnOnce(&Path), port: u16) -> (Job, PathBuf) {
    let store = sshd.data_dir().join("files-only");
    let builder = Job::new("app");
    let kh = builder.path("known_hosts");
    known_hosts(&kh);
    let body = sshd.destination(&store, &kh).replace(
        &format!("port = {}\n", sshd.port()),
        &format!("port = {port}\n"),
    );
    let (builder, _) = with_uploads(builder.destination("nas", &body));
    (builder.write(), store)
}

#[test]
fn a_host_key_not_in_known_hosts_is_refused_with_a_hint() {
    let sshd = SshServer::start();
    let other = tempfile::tempdir().expect("tempdir");
    keygen(&other.path().join("k"));
    let (job, store) = files_job(
        &sshd,
        |kh| {
            let key = std::fs::read_to_string(other.path().join("k.pub")).expect("read");
            std::fs::write(kh, format!("[127.0.0.1]:{} {}", sshd.port(), key.trim()))
                .expect("write");
        },
        sshd.port(),
    );
    let (code, out) = job.stowage(&["run", "app"]);
    assert_ne!(code, Some(0), "{out}");
    let kh = job.path("known_hosts");
    assert!(
        out.contains(&format!(
            "the server's host key does not match the one known_hosts {} has for [127.0.0.1]:{}",
            kh.display(),
            sshd.port()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ssh-keyscan -p {} 127.0.0.1 >> {}",
            sshd.port(),
            kh.display()
        )),
        "{out}"
    );
    assert!(
        list_tree(&store).is_empty(),
        "nothing was written: {:#?}",
        list_tree(&store)
    );

    // A known_hosts without the server at all: the same refusal, saying how to add it.
    std::fs::write(&kh, "").expect("empty known_hosts");
    let (code, out) = job.stowage(&["run", "app"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "the server's host key is not in known_hosts {}; add it with `ssh-keyscan -p {} 127.0.0.1 >> {}`",
            kh.display(),
            sshd.port(),
            kh.display()
        )),
        "{out}"
    );
    assert!(list_tree(&store).is_empty());
}

#[test]
fn check_config_connect_reaches_the_server_or_says_why_not() {
    let sshd = SshServer::start();
    let (job, _) = files_job(&sshd, |kh| sshd.write_known_hosts(kh), sshd.port());
    let (code, out) = job.stowage(&["check-config", "--connect"]);
    assert_eq!(code, Some(0), "{out}\n{}", sshd.log());
    assert!(
        out.contains(&format!(
            "destination nas (sftp://{}@127.0.0.1:{}",
            sshd.user(),
            sshd.port()
        )) && out.contains("reachable and writable"),
        "{out}"
    );
    assert!(
        out.contains("connect: every source and destination answered"),
        "{out}"
    );

    // Nothing listens on the port: the destination is named, with ssh's reason.
    let closed = common::free_port();
    let (job, _) = files_job(&sshd, |kh| sshd.write_known_hosts(kh), closed);
    let (code, out) = job.stowage(&["check-config", "--connect"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "problem: destination nas (sftp://{}@127.0.0.1:{closed}",
            sshd.user()
        )),
        "{out}"
    );
    assert!(out.contains("Connection refused"), "{out}");
}

/// The storage itself, as the repository uses it: streamed uploads that only appear whole,
/// an abandoned upload that leaves nothing, overwrites, reads, listings and deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_storage_publishes_whole_objects_only() {
    use bytes::Bytes;
    use stowage::storage::sftp::{HostCheck, SftpConfig, SftpStorage};
    use stowage::storage::{Chunk, Storage, StorageError};
    use tokio::io::AsyncReadExt;

    let sshd = SshServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let known_hosts = dir.path().join("known_hosts");
    sshd.write_known_hosts(&known_hosts);
    let root = sshd.data_dir().join("direct/root");
    let st = SftpStorage::new(SftpConfig {
        host: "127.0.0.1".to_string(),
        port: sshd.port(),
        user: sshd.user().to_string(),
        key_file: sshd.client_key(),
        known_hosts,
        host_check: HostCheck::Strict,
        path: root.display().to_string(),
    });
    st.preflight()
        .await
        .expect("preflight creates the directory");
    assert!(root.is_dir());
    assert!(list_tree(&root).is_empty(), "the probe is gone");

    // A streamed upload of several chunks, larger than what is kept in flight.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let chunk = Bytes::from(vec![42u8; 1 << 20]);
    let sender = tokio::spawn(async move {
        for _ in 0..6 {
            tx.send(Chunk::Data(chunk.clone())).await.expect("send");
        }
        tx.send(Chunk::End).await.expect("send end");
    });
    let n = st.put_stream("job/1/big", rx).await.expect("put_stream");
    sender.await.expect("sender");
    assert_eq!(n, 6 << 20);
    let mut read = Vec::new();
    st.get("job/1/big")
        .await
        .expect("get")
        .read_to_end(&mut read)
        .await
        .expect("read");
    assert!(read.len() == 6 << 20 && read.iter().all(|b| *b == 42));

    // A producer that gives up: Abandoned, and neither the object nor a partial appears.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Chunk::Data(Bytes::from_static(b"half")))
        .await
        .expect("send");
    drop(tx);
    let e = st.put_stream("job/2/cut", rx).await.expect_err("abandoned");
    assert!(matches!(e, StorageError::Abandoned), "{e:?}");
    assert_eq!(list_tree(&root), ["job/1/big"]);

    // Overwrite in place, read back, list with sizes.
    st.put_bytes("job/1/small", Bytes::from_static(b"one"))
        .await
        .expect("put");
    st.put_bytes("job/1/small", Bytes::from_static(b"two!"))
        .await
        .expect("overwrite");
    assert_eq!(
        st.get_bytes("job/1/small").await.expect("get"),
        Bytes::from_static(b"two!")
    );
    let mut listed: Vec<(String, u64)> = st
        .list("job/")
        .await
        .expect("list")
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("job/1/big".to_string(), 6 << 20),
            ("job/1/small".to_string(), 4)
        ]
    );
    assert!(st.list("other/").await.expect("list").is_empty());
    assert_eq!(st.list("job/1/sm").await.expect("list").len(), 1);

    // Missing objects; keys that would leave the directory.
    let Err(e) = st.get("job/none").await else {
        panic!("a missing object was read");
    };
    assert!(matches!(e, StorageError::NotFound(_)), "{e:?}");
    let Err(e) = st.get("../escape").await else {
        panic!("a key outside the root was read");
    };
    assert!(matches!(e, StorageError::Denied(_)), "{e:?}");

    // Deletes are idempotent and take the emptied directories with them.
    let keys = [
        "job/1/big".to_string(),
        "job/1/small".to_string(),
        "job/1/gone".to_string(),
    ];
    st.delete(&keys).await.expect("delete");
    st.delete(&keys).await.expect("delete again");
    assert!(!root.join("job").exists(), "{:#?}", list_tree(&root));
    assert!(root.is_dir(), "the destination's directory stays");
}

/// `forget` removes a backup from the SFTP destination (manifest, objects, its blobs), and
/// `copy` puts it back from a local destination of the job: restored from the server, the
/// same data.
#[test]
fn forget_and_copy_over_sftp() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 200);
    let sshd = SshServer::start();
    let store = sshd.data_dir().join("backups/stowage");
    let builder = Job::new("app");
    let known_hosts = builder.path("known_hosts");
    sshd.write_known_hosts(&known_hosts);
    let body = sshd.destination(&store, &known_hosts);
    let (builder, uploads) = with_uploads(builder.destination("nas", &body).local("spare", None));
    let job = builder.postgres("db", &pg.url("app")).write();
    let id = job.backup();
    assert_eq!(job.ids("nas"), vec![id.clone()]);

    let (code, out) = job.stowage(&["forget", "app", &id, "--from", "nas", "--force"]);
    assert_eq!(code, Some(0), "forget:\n{out}\n{}", sshd.log());
    assert!(job.ids("nas").is_empty(), "forgotten on nas");
    let left = list_tree(&store);
    assert!(
        !left
            .iter()
            .any(|f| f.contains(&id) || f.contains("/blobs/")),
        "nothing of the backup is left on the server: {left:#?}"
    );
    assert_eq!(
        job.ids("spare"),
        vec![id.clone()],
        "the other destination keeps it"
    );

    let (code, out) = job.stowage(&["copy", "app", &id, "--from", "spare", "--to", "nas"]);
    assert_eq!(code, Some(0), "copy:\n{out}\n{}", sshd.log());
    assert_eq!(job.ids("nas"), vec![id.clone()]);
    pg.create_db("copied");
    let files_to = job.path("copied-uploads");
    let (code, out) = job.stowage(&[
        "restore",
        "app",
        &id,
        "--from",
        "nas",
        "--to",
        &pg.url("copied"),
        "--files-to",
        files_to.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore of the copy:\n{out}\n{}", sshd.log());
    assert_eq!(pg.table_checksums("copied"), pg.table_checksums("app"));
    assert!(
        read_tree(&files_to) == read_tree(&uploads),
        "copied files differ"
    );
}
