//! `stowage download`: one database source of a backup as its standard artifact (the
//! `pg_dump -Fc` file, the SQL text, the .rdb, …), decrypted, decompressed and checked
//! against the manifest, for tools outside stowage.
//!
//! A file output is written to a temporary file beside it and renamed into place only when
//! every byte has been read and checked, so a failed download never leaves a partial file
//! (nor touches one that was there).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_PENDING, with_job};
use crate::config::{Config, Job};
use crate::engine::{Archive, SourceError};
use crate::logging::Console;
use crate::repo::Repository;
use crate::repo::manifest::SourceEntry;
use crate::restore::{self, Located, RestoreError, lifecycle};
use crate::storage::StorageError;
use crate::units::human_bytes;

/// What `download` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    pub job: String,
    /// An id, a unique prefix of one, or "latest".
    pub id: String,
    /// The source to download.
    pub only: String,
    /// The file to write, or "-" for stdout.
    pub output: PathBuf,
    pub from: Option<String>,
    pub identity: Option<PathBuf>,
    /// Read a backup whose manifest fails the job's auth_key_file anyway.
    pub trust_unauthenticated: bool,
}

impl Request {
    fn to_stdout(&self) -> bool {
        self.output.as_os_str() == "-"
    }
}

/// Why a download did not happen; each maps to an exit code.
#[derive(Debug)]
enum Failure {
    /// Bad usage: an unknown source, a files source, an output that is a directory (2).
    Usage(String),
    /// The object waits for a retrieval from an archive tier (4).
    Pending(String),
    /// Anything else: unreachable, missing, corrupt, wrong key, cannot write (1).
    Failed(String),
}

impl From<RestoreError> for Failure {
    fn from(e: RestoreError) -> Failure {
        match e {
            RestoreError::Usage(m) => Failure::Usage(m),
            RestoreError::RetrievalPending(m) => Failure::Pending(m),
            e => Failure::Failed(e.to_string()),
        }
    }
}

/// What was written, for the closing line.
struct Done {
    bytes: u64,
    entry: SourceEntry,
    id: String,
    destination: String,
}

pub fn run(path: &Path, req: Request) -> i32 {
    with_job(path, Console::Stderr, &req.job, |config, job, rt| {
        let result = rt.block_on(async {
            tokio::select! {
                r = download(config, job, &req) => r,
                // Return (not die) on a signal, so the temporary file is removed.
                () = super::shutdown_signal() => Err(Failure::Failed("interrupted".into())),
            }
        });
        match result {
            Ok(done) => {
                let line = format!(
                    "wrote {}: source {} ({}, {}) of backup {} of job {} from {}, {} (sha256 verified)",
                    if req.to_stdout() {
                        "stdout".to_string()
                    } else {
                        req.output.display().to_string()
                    },
                    done.entry.name,
                    done.entry.kind,
                    done.entry.format,
                    done.id,
                    job.name,
                    done.destination,
                    human_bytes(done.bytes),
                );
                // stdout carries the data with `-o -`.
                if req.to_stdout() {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                EXIT_OK
            }
            Err(Failure::Usage(m)) => {
                eprintln!("error: {m}");
                EXIT_CONFIG
            }
            Err(Failure::Pending(m)) => {
                eprintln!("retrieval pending: {m}");
                EXIT_PENDING
            }
            Err(Failure::Failed(m)) => {
                eprintln!("error: download failed: {m}");
                EXIT_FAILED
            }
        }
    })
}

async fn download(config: &Config, job: &Job, req: &Request) -> Result<Done, Failure> {
    let out = Output::check(req)?;
    let keys = restore::keys_for(job, req.identity.as_ref())?;
    let Located {
        storage,
        destination,
        manifest,
    } = restore::locate(config, job, req.from.as_ref(), &req.id).await?;
    let Some(entry) = manifest.sources.iter().find(|s| s.name == req.only) else {
        return Err(Failure::Usage(format!(
            "--only {}: backup {} has no source \"{}\"; its sources: {}",
            req.only,
            manifest.id,
            req.only,
            manifest
                .sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    };
    if entry.files.is_some() {
        return Err(Failure::Usage(format!(
            "source \"{}\" is a files source: a directory tree, not one file; restore it into a directory with `stowage restore {} {} --only {} --files-to DIR`",
            entry.name, job.name, manifest.id, entry.name
        )));
    }
    let expect = crate::repo::packing::Expect::of(job, req.trust_unauthenticated);
    let repo = Repository::new(storage.as_ref(), &job.name);
    let packing = repo
        .packing(&manifest, &expect, keys)
        .map_err(RestoreError::from)?;
    let pending = |what: String| {
        Failure::Pending(format!(
            "{what}; request it with `stowage retrieve {job} {id} --from {destination} --only {src}` and run this download again once `stowage status {job} {id} --from {destination} --only {src}` shows it ready",
            job = job.name,
            id = manifest.id,
            src = entry.name,
        ))
    };
    if let Some((class, _)) = restore::archive_class(config, &destination) {
        let survey = lifecycle::survey(repo, &[entry], &packing, &|_| None, None)
            .await
            .map_err(Failure::from)?;
        if !survey.restorable() {
            return Err(pending(format!(
                "{} of backup {} on {destination} ({class}) is not retrieved yet ({})",
                entry.key,
                manifest.id,
                survey.counts()
            )));
        }
    }
    // A wrong or missing identity fails here, before anything is written.
    restore::check_keys(storage.as_ref(), &packing, &[entry.key.as_str()]).await?;

    let archive = repo.archive(entry, &packing, &destination);
    let reader = archive.open().await.map_err(|e| match not_retrieved(&e) {
        Some(why) => pending(why),
        None => Failure::Failed(e.to_string()),
    })?;
    let bytes = out.write(reader, entry).await?;
    Ok(Done {
        bytes,
        entry: entry.clone(),
        id: manifest.id.clone(),
        destination,
    })
}

/// The store's own "archived, not retrieved" answer behind a read error.
fn not_retrieved(e: &SourceError) -> Option<String> {
    match e {
        SourceError::Archive { source, .. } => match source.downcast_ref::<StorageError>() {
            Some(StorageError::NotRetrieved(why)) => Some(why.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Where the bytes go.
enum Output {
    Stdout,
    /// Written to a temporary file in `dir`, renamed to `path` when complete.
    File {
        path: PathBuf,
        dir: PathBuf,
    },
}

impl Output {
    /// Check the output before anything is read: a directory, or a missing parent, is
    /// refused up front.
    fn check(req: &Request) -> Result<Output, Failure> {
        if req.to_stdout() {
            return Ok(Output::Stdout);
        }
        let path = req.output.clone();
        if path.is_dir() {
            return Err(Failure::Usage(format!(
                "-o {}: is a directory; give a file name",
                path.display()
            )));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Failure::Usage(format!(
                "-o {}: directory {} does not exist",
                path.display(),
                dir.display()
            )));
        }
        Ok(Output::File { path, dir })
    }

    /// Copy `reader` out; check the count against the manifest's raw size. Returns the
    /// bytes written. A file appears at its path only on success.
    async fn write(
        &self,
        reader: crate::codec::Reader,
        entry: &SourceEntry,
    ) -> Result<u64, Failure> {
        match self {
            Output::Stdout => {
                let mut stdout = tokio::io::stdout();
                let n = copy(reader, &mut stdout, entry).await?;
                stdout
                    .flush()
                    .await
                    .map_err(|e| Failure::Failed(format!("cannot write to stdout: {e}")))?;
                Ok(n)
            }
            Output::File { path, dir } => {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "download".into());
                let cannot = |what: &str, e: &dyn std::fmt::Display| {
                    Failure::Failed(format!("cannot {what} {}: {e}", path.display()))
                };
                // Mode 0600: the file holds the database's data.
                let tmp = tempfile::Builder::new()
                    .prefix(&format!(".{name}."))
                    .suffix(".partial")
                    .tempfile_in(dir)
                    .map_err(|e| cannot("create a temporary file for", &e))?;
                let std_file = tmp.as_file().try_clone().map_err(|e| cannot("write", &e))?;
                let mut file = tokio::fs::File::from_std(std_file);
                let n = copy(reader, &mut file, entry).await?;
                file.flush().await.map_err(|e| cannot("write", &e))?;
                file.sync_all().await.map_err(|e| cannot("write", &e))?;
                drop(file);
                // Replaces an existing file in one step (same directory, same filesystem).
                tmp.persist(path)
                    .map_err(|e| cannot("rename into", &e.error))?;
                Ok(n)
            }
        }
    }
}

/// Stream `reader` into `out`. The reader fails at its end when the stored bytes do not
/// match the manifest's size and sha256; the decompressed count is checked here too.
async fn copy(
    reader: crate::codec::Reader,
    out: &mut (dyn AsyncWrite + Send + Unpin),
    entry: &SourceEntry,
) -> Result<u64, Failure> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let mut n: u64 = 0;
    loop {
        let chunk = reader
            .fill_buf()
            .await
            .map_err(|e| Failure::Failed(format!("{}: {e}", entry.key)))?;
        if chunk.is_empty() {
            break;
        }
        let len = chunk.len();
        out.write_all(chunk)
            .await
            .map_err(|e| Failure::Failed(format!("cannot write: {e}")))?;
        n += len as u64;
        reader.consume(len);
    }
    if n != entry.raw_size {
        return Err(Failure::Failed(format!(
            "{}: decompressed to {n} bytes, the manifest says {}",
            entry.key, entry.raw_size
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(output: &str) -> Request {
        Request {
            job: "app".into(),
            id: "latest".into(),
            only: "db".into(),
            output: output.into(),
            from: None,
            identity: None,
            trust_unauthenticated: false,
        }
    }

    #[test]
    fn outputs_are_checked_before_any_read() {
        assert!(matches!(Output::check(&req("-")), Ok(Output::Stdout)));
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        assert!(
            matches!(Output::check(&req(&d)), Err(Failure::Usage(m)) if m.contains("is a directory"))
        );
        let missing = format!("{d}/nope/db.pgdump");
        assert!(
            matches!(Output::check(&req(&missing)), Err(Failure::Usage(m)) if m.contains("does not exist"))
        );
        assert!(matches!(
            Output::check(&req("db.pgdump")),
            Ok(Output::File { dir, .. }) if dir == Path::new(".")
        ));
    }

    /// A stream that fails part-way leaves neither a new file nor a temporary one, and an
    /// existing file is untouched.
    #[tokio::test]
    async fn a_failed_write_leaves_the_old_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db.pgdump");
        std::fs::write(&path, b"old").expect("write");
        let out = Output::check(&req(&path.display().to_string())).expect("output");
        let failing = tokio_util::io::StreamReader::new(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"new bytes")),
            Err(std::io::Error::other("corrupt")),
        ]));
        let entry = SourceEntry {
            key: "app/X/db.pgdump.zst".into(),
            raw_size: 9,
            ..Default::default()
        };
        let e = out.write(Box::new(failing), &entry).await;
        assert!(matches!(e, Err(Failure::Failed(m)) if m.contains("corrupt")));
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);

        let ok = Box::new(std::io::Cursor::new(b"new bytes".to_vec()));
        assert_eq!(out.write(ok, &entry).await.expect("write"), 9);
        assert_eq!(std::fs::read(&path).expect("read"), b"new bytes");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);

        let short = Box::new(std::io::Cursor::new(b"new".to_vec()));
        let e = out.write(short, &entry).await;
        assert!(matches!(e, Err(Failure::Failed(m)) if m.contains("the manifest says 9")));
        assert_eq!(std::fs::read(&path).expect("read"), b"new bytes");
    }
}
