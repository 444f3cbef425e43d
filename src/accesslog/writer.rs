//! The writer thread of one access-log destination: batches queued lines into one
//! write, reopens its file on request, and notices when the file left its path.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant};

use prometheus::IntCounter;

pub enum Msg {
    /// One rendered line (no newline) and the counter of the listener it belongs to.
    Line(String, IntCounter),
    /// Reopen the file at the path; answer with the result.
    Reopen(Sender<Result<(), String>>),
    /// Answer once every line queued before this one is written (before exit).
    Flush(Sender<Result<(), String>>),
}

/// `stdout` and `stderr` name the process's streams, not files.
pub fn is_stream(path: &str) -> bool {
    matches!(path, "stdout" | "stderr")
}

/// How often a file destination checks that it is still at its path.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bytes batched into one write.
const BATCH: usize = 64 * 1024;

pub enum Out {
    Stdout,
    Stderr,
    File {
        path: String,
        file: File,
        checked: Instant,
        /// The path no longer names the open file (deleted, or its directory).
        gone: bool,
    },
}

fn open_append(path: &str) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl Out {
    pub fn open(path: &str) -> std::io::Result<Out> {
        Ok(match path {
            "stdout" => Out::Stdout,
            "stderr" => Out::Stderr,
            _ => Out::File {
                path: path.to_string(),
                file: open_append(path)?,
                checked: Instant::now(),
                gone: false,
            },
        })
    }

    /// Write a batch; an error (or a file no longer at its path) means the batch
    /// is lost.
    fn write(&mut self, buf: &[u8]) -> Result<(), String> {
        match self {
            Out::Stdout => std::io::stdout()
                .lock()
                .write_all(buf)
                .map_err(|e| e.to_string()),
            Out::Stderr => std::io::stderr()
                .lock()
                .write_all(buf)
                .map_err(|e| e.to_string()),
            Out::File {
                path,
                file,
                checked,
                gone,
            } => {
                file.write_all(buf).map_err(|e| e.to_string())?;
                if checked.elapsed() >= CHECK_EVERY {
                    *checked = Instant::now();
                    let now_gone = !same_file(path, file);
                    if now_gone && !*gone {
                        tracing::warn!(path = %path, "access log file is no longer at its path; lines are lost until SIGUSR1 or POST /reopen_logs");
                    }
                    *gone = now_gone;
                }
                if *gone {
                    Err("the file is no longer at its path".into())
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Open the path again and switch to it; on failure keep writing to the old
    /// file (like NGINX).
    fn reopen(&mut self) -> Result<(), String> {
        let Out::File {
            path,
            file,
            checked,
            gone,
        } = self
        else {
            return Ok(());
        };
        match open_append(path) {
            Ok(f) => {
                *file = f;
                *checked = Instant::now();
                *gone = false;
                tracing::info!(path = %path, "access log reopened");
                Ok(())
            }
            // Logged once, by the caller (`Server::reopen_logs`).
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether `path` still names the open `file` (a rename by logrotate before the
/// reopen counts as still there: the lines are kept in the renamed file).
fn same_file(path: &str, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(_), Ok(_)) => true,
        (Err(e), _) if e.kind() == std::io::ErrorKind::NotFound => {
            // Deleted, or renamed with nothing at the path yet. A rename keeps a
            // link; a deleted file has none.
            file.metadata().map(|m| m.nlink() > 0).unwrap_or(false)
        }
        _ => true,
    }
}

/// The writer loop: until every sender (every config using this destination) is
/// gone, then the file closes.
pub fn run(rx: Receiver<Msg>, mut out: Out) {
    let mut buf: Vec<u8> = Vec::with_capacity(BATCH);
    let mut owners: Vec<IntCounter> = Vec::new();
    let mut next = rx.recv().ok();
    while let Some(msg) = next.take() {
        match msg {
            Msg::Reopen(ack) => {
                let _ = ack.send(out.reopen());
                next = rx.recv().ok();
            }
            Msg::Flush(ack) => {
                let _ = ack.send(Ok(()));
                next = rx.recv().ok();
            }
            Msg::Line(line, owner) => {
                buf.clear();
                owners.clear();
                push(&mut buf, &mut owners, line, owner);
                // Batch whatever else is queued, up to a reopen.
                while buf.len() < BATCH {
                    match rx.try_recv() {
                        Ok(Msg::Line(l, o)) => push(&mut buf, &mut owners, l, o),
                        Ok(reopen) => {
                            next = Some(reopen);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if out.write(&buf).is_err() {
                    for o in &owners {
                        o.inc();
                    }
                }
                if next.is_none() {
                    next = rx.recv().ok();
                }
            }
        }
    }
}

fn push(buf: &mut Vec<u8>, owners: &mut Vec<IntCounter>, line: String, owner: IntCounter) {
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    owners.push(owner);
}

/// Whether `path` can be opened for append, without creating it.
pub fn check(path: &str) -> Result<(), String> {
    use rustix::fs::{access, Access};
    if is_stream(path) {
        return Ok(());
    }
    let p = std::path::Path::new(path);
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => return Err(format!("`{path}` is a directory")),
        Ok(_) => {
            return access(p, Access::WRITE_OK).map_err(|e| format!("cannot write `{path}`: {e}"));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("cannot open `{path}`: {e}"))
        }
        Err(_) => {}
    }
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => access(dir, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
            format!(
                "cannot create `{path}`: directory `{}` is not writable ({e})",
                dir.display()
            )
        }),
        Ok(_) => Err(format!(
            "cannot create `{path}`: `{}` is not a directory",
            dir.display()
        )),
        Err(_) => Err(format!(
            "cannot create `{path}`: directory `{}` does not exist",
            dir.display()
        )),
    }
}
