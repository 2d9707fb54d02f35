//! A [`Database`] whose dump is bytes the test gives, and whose restores are recorded.
//!
//! Its dump can fail the ways a dump tool does: output that breaks off mid-stream (a pipe
//! error), or all of it followed by a non-zero exit (`Dump::finish` fails). Its restore
//! applies what it reads as it reads it, like a tool fed on stdin (so it keeps
//! `verifies_before_commit` false): a restore that fails part way leaves what it had read.
//! It has no objects and no live database, and says so rather than inventing any.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::io::AsyncReadExt;

use crate::engine::{Archive, Database, Dump, DumpInfo, RestoreOptions, SourceError};

pub(crate) const TOOL: &str = "fake-dump";
pub(crate) const TOOL_VERSION: &str = "fake-dump 1.0";
/// The dump is handed over in pieces of this size, so it streams like a tool's pipe.
const PIECE: usize = 64 * 1024;

#[derive(Debug, Default)]
struct State {
    data: Bytes,
    /// The output breaks off with a read error after this many bytes.
    break_after: Option<usize>,
    /// The tool hangs after writing this many bytes (no more output, no exit).
    stall_after: Option<usize>,
    /// The tool exits non-zero after writing all of its output.
    fail_finish: bool,
    /// The tool cannot even report its version.
    fail_version: bool,
    dumps: usize,
    restores: Vec<Restored>,
}

/// One restore the fake received: what it was asked and the bytes it applied (all of the
/// archive, or what it read before the archive failed).
#[derive(Debug, Clone)]
pub(crate) struct Restored {
    pub(crate) options: RestoreOptions,
    pub(crate) data: Vec<u8>,
    /// The archive was read to its end.
    pub(crate) complete: bool,
}

/// Clones share their state: keep one to change what the next dump does, or to read what
/// was restored.
#[derive(Debug, Clone)]
pub(crate) struct FakeDb {
    name: String,
    state: Arc<Mutex<State>>,
}

impl FakeDb {
    pub(crate) fn new(name: &str, data: impl Into<Bytes>) -> FakeDb {
        FakeDb {
            name: name.to_string(),
            state: Arc::new(Mutex::new(State {
                data: data.into(),
                ..State::default()
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding it has failed already; its state still reads.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_data(&self, data: impl Into<Bytes>) {
        self.state().data = data.into();
    }

    /// The next dumps break off after `n` bytes (`None`: they do not).
    pub(crate) fn break_after(&self, n: Option<usize>) {
        self.state().break_after = n;
    }

    /// The next dumps' tool hangs after `n` bytes (`None`: it does not).
    pub(crate) fn stall_after(&self, n: Option<usize>) {
        self.state().stall_after = n;
    }

    /// The next dumps' tool exits non-zero after its whole output.
    pub(crate) fn fail_finish(&self, fail: bool) {
        self.state().fail_finish = fail;
    }

    pub(crate) fn fail_version(&self, fail: bool) {
        self.state().fail_version = fail;
    }

    /// Dumps started so far.
    pub(crate) fn dumps(&self) -> usize {
        self.state().dumps
    }

    pub(crate) fn restores(&self) -> Vec<Restored> {
        self.state().restores.clone()
    }
}

async fn read_archive(archive: &dyn Archive) -> Result<Vec<u8>, SourceError> {
    let mut r = archive.open().await?;
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| SourceError::io("reading the archive", e))?;
    Ok(buf)
}

#[async_trait]
impl Database for FakeDb {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "fake"
    }

    fn extension(&self) -> &'static str {
        "fake"
    }

    fn format(&self) -> &'static str {
        "bytes given by a test"
    }

    fn describe(&self) -> String {
        format!("fake {}", self.name)
    }

    fn target_example(&self) -> &'static str {
        "NAME"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        if target.is_empty() {
            return Err("the target is empty".into());
        }
        Ok(())
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        if self.state().fail_version {
            return Err(SourceError::Spawn {
                tool: TOOL.into(),
                reason: crate::engine::SpawnReason::missing("not found on PATH"),
            });
        }
        Ok((TOOL.into(), TOOL_VERSION.into()))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        let (data, break_after, stall_after, fail_finish) = {
            let mut st = self.state();
            st.dumps += 1;
            (
                st.data.clone(),
                st.break_after,
                st.stall_after,
                st.fail_finish,
            )
        };
        let shown = break_after
            .into_iter()
            .chain(stall_after)
            .fold(data.len(), usize::min);
        let mut pieces: Vec<std::io::Result<Bytes>> = (0..shown)
            .step_by(PIECE)
            .map(|at| Ok(data.slice(at..(at + PIECE).min(shown))))
            .collect();
        // Whichever comes first: the tool hangs, or its output breaks off.
        let hang = stall_after.is_some_and(|s| break_after.is_none_or(|b| s < b));
        if break_after.is_some() && !hang {
            pieces.push(Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the fake dump broke off",
            )));
        }
        let rest =
            futures::stream::iter(hang.then_some(())).flat_map(|()| futures::stream::pending());
        let reader = tokio_util::io::StreamReader::new(futures::stream::iter(pieces).chain(rest));
        let finish = async move {
            if fail_finish {
                return Err(SourceError::Failed {
                    tool: TOOL.into(),
                    status: "exit status: 1".into(),
                    stderr: "fake-dump: failed after writing its output".into(),
                });
            }
            Ok(DumpInfo {
                server_version: Some("1.0".into()),
                objects: None,
                rows: None,
                wal: None,
            })
        }
        .boxed();
        Ok(Dump {
            reader: Box::new(reader),
            finish,
        })
    }

    /// The fake's archive is opaque bytes: read to the end (so its checks run), it lists
    /// nothing.
    async fn archive_objects(&self, archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        read_archive(archive).await?;
        Ok(Vec::new())
    }

    async fn live_objects(&self, _target: Option<&str>) -> Result<Vec<String>, SourceError> {
        Err(SourceError::Refused(
            "the fake database has no live objects to list".into(),
        ))
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        if opts.dry_run {
            let n = read_archive(archive).await?.len();
            return Ok(vec![format!(
                "would restore {n} bytes into {}",
                opts.target
            )]);
        }
        let mut r = archive.open().await?;
        let at = {
            let mut st = self.state();
            st.restores.push(Restored {
                options: opts.clone(),
                data: Vec::new(),
                complete: false,
            });
            st.restores.len() - 1
        };
        let mut buf = vec![0u8; 8 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .await
                .map_err(|e| SourceError::io("reading the archive", e))?;
            let mut st = self.state();
            let applied = &mut st.restores[at];
            if n == 0 {
                applied.complete = true;
                let line = format!("restored {} bytes into {}", applied.data.len(), opts.target);
                return Ok(vec![line]);
            }
            applied.data.extend_from_slice(&buf[..n]);
        }
    }
}
