//! Printing: tables, JSON, sizes, progress bars.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::repo::format::*;
use crate::repo::walk::Progress;
use crate::repo::{Repository, Result};

/// Parses a size such as `268435456`, `256M`, `256MiB`, `1G`, `1.5T`, `512k`: the CLI's
/// `--cache-size`, `--disk-cache-size` and `--readahead`. Units are binary whichever way
/// they are spelt (`G`, `GB` and `GiB` all mean 2^30), as they always were here; the
/// number and unit are read by `bytesize`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "{s:?} is not a size (try 256M, 1G or a number of bytes)"
        ));
    }
    let unit = unit.trim().to_ascii_lowercase();
    let binary = match unit.as_str() {
        "" | "b" => "B",
        "k" | "kb" | "kib" => "KiB",
        "m" | "mb" | "mib" => "MiB",
        "g" | "gb" | "gib" => "GiB",
        "t" | "tb" | "tib" => "TiB",
        u => return Err(format!("unknown size unit {u:?} in {s:?}")),
    };
    format!("{num} {binary}")
        .parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|_| format!("{s:?} is not a size (try 256M, 1G or a number of bytes)"))
}

/// A size for people, in binary units: `512 B`, `1.5 KiB`, `256.0 MiB`.
pub fn human(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// Prints a JSON document (see [`print_bytes`]).
pub fn print_json(v: &Value) {
    let mut text = serde_json::to_string_pretty(v).expect("JSON encodes");
    text.push('\n');
    print_bytes(text.as_bytes());
}

/// Writes `bytes` to stdout. A reader that closed the pipe (`| head`) ends the output
/// quietly instead of panicking on the write.
pub fn print_bytes(bytes: &[u8]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(bytes).and_then(|()| out.flush())
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("vaultfs: writing to stdout: {e}");
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository's settings, as `init --json` shows them.
pub fn repo_json(repo: &Repository) -> Value {
    let c = repo.config();
    json!({
        "location": repo.location(),
        "id": hex::encode(c.repo_id),
        "created": rfc3339(c.created_ns),
        "pack_size": c.pack_size,
        "chunk_min": c.chunker.min_size,
        "chunk_avg": c.chunker.avg_size,
        "chunk_max": c.chunker.max_size,
        "zstd_level": c.zstd_level,
        "kdf_memory_kib": c.kdf.memory_kib,
        "kdf_passes": c.kdf.iterations,
    })
}

/// What a backup read or a restore wrote, said the same way by both: regular files,
/// directories, other entries (symlinks, fifos, devices, sockets), size of the files.
pub fn counts(files: u64, dirs: u64, other: u64, bytes: u64) -> String {
    format!(
        "{files} files, {dirs} dirs, {other} other, {}",
        human(bytes)
    )
}

pub fn print_backup_summary(m: &Manifest) {
    println!("created recovery point {}/{}", m.vault, m.name);
    let secs = (m.end_ns - m.time_ns) as f64 / 1e9;
    for b in &m.backups {
        let s = &b.stats;
        println!(
            "  {} ({}): {} ({} unchanged files skipped), {} read, {} new chunks, {} added",
            printable(&b.name),
            b.kind.as_str(),
            counts(s.files, s.dirs, s.other, s.bytes),
            s.files_unchanged,
            human(s.bytes_read),
            s.chunks_new,
            human(s.bytes_stored_new)
        );
    }
    println!("  took {secs:.2} s");
}

fn mode_string(n: &Node) -> String {
    let t = match n.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    };
    let m = n.mode;
    let bit = |b: u32, c: char| if m & b != 0 { c } else { '-' };
    let x = |b: u32, s: u32, lower: char, upper: char| match (m & b != 0, m & s != 0) {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        t,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        x(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        x(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        x(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

fn node_json(path: &[u8], n: &Node) -> Value {
    json!({
        "path": lossy(path),
        "type": format!("{:?}", n.kind).to_lowercase(),
        "mode": format!("{:o}", n.mode),
        "uid": n.uid,
        "gid": n.gid,
        "size": n.size,
        "mtime": rfc3339(n.mtime_ns),
        "target": n.target.as_deref().map(lossy),
    })
}

/// Lists a point's backups, or a path inside one.
pub fn list(
    repo: &Repository,
    m: &Manifest,
    path: Option<&[u8]>,
    long: bool,
    recursive: bool,
    json: bool,
) -> Result<()> {
    // Entries to print: (display path, node).
    let mut start: Vec<(Vec<u8>, Node)> = Vec::new();
    let trimmed = path.map(|p| {
        let start = p.iter().position(|&b| b != b'/').unwrap_or(p.len());
        let end = p.iter().rposition(|&b| b != b'/').map_or(start, |e| e + 1);
        &p[start..end.max(start)]
    });
    match trimmed.filter(|p| !p.is_empty()) {
        None => {
            for b in &m.backups {
                start.push((b.name.clone(), repo.backup_root(b)?));
            }
        }
        Some(p) => {
            let node = repo.find_node(m, p)?;
            match (node.kind, node.subtree) {
                (NodeKind::Dir, Some(sub)) => {
                    for n in repo.load_tree(&sub)?.nodes {
                        let mut full = p.to_vec();
                        full.push(b'/');
                        full.extend_from_slice(&n.name);
                        start.push((full, n));
                    }
                }
                _ => start.push((p.to_vec(), node)),
            }
        }
    }
    let mut json_rows = Vec::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut stack: Vec<(Vec<u8>, Node)> = start.into_iter().rev().collect();
    while let Some((p, n)) = stack.pop() {
        if json {
            json_rows.push(node_json(&p, &n));
        } else {
            use std::io::Write;
            let _ = if long {
                let mut line = format!(
                    "{} {:>5} {:>5} {:>12} {} ",
                    mode_string(&n),
                    n.uid,
                    n.gid,
                    n.size,
                    rfc3339(n.mtime_ns)
                )
                .into_bytes();
                line.extend_from_slice(&printable_bytes(&p));
                if let Some(t) = &n.target {
                    line.extend_from_slice(b" -> ");
                    line.extend_from_slice(&printable_bytes(t));
                }
                line.push(b'\n');
                out.write_all(&line)
            } else {
                out.write_all(&printable_bytes(&p))
                    .and_then(|()| out.write_all(b"\n"))
            };
        }
        if recursive && let (NodeKind::Dir, Some(sub)) = (n.kind, n.subtree) {
            let children = repo.load_tree(&sub)?.nodes;
            for c in children.into_iter().rev() {
                let mut full = p.clone();
                full.push(b'/');
                full.extend_from_slice(&c.name);
                stack.push((full, c));
            }
        }
    }
    drop(out);
    if json {
        print_json(&Value::Array(json_rows));
    }
    Ok(())
}

/// A writer that counts the bytes written through it into `progress.bytes` (and each
/// flush-free write as it goes), for a progress display of a stream.
pub struct CountingWriter<W> {
    inner: W,
    progress: Arc<Progress>,
}

impl<W: std::io::Write> CountingWriter<W> {
    pub fn new(inner: W, progress: Arc<Progress>) -> Self {
        CountingWriter { inner, progress }
    }
}

impl<W: std::io::Write> std::io::Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.add(0, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A progress bar on stderr with rate (and ETA when the total is known), drawn only when
/// stderr is a terminal and `--quiet` is not given.
pub struct ProgressDisplay {
    stop: Option<std::sync::mpsc::Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl ProgressDisplay {
    pub fn start(progress: Arc<Progress>, total_bytes: Option<u64>, what: &'static str) -> Self {
        Self::start_counting(progress, total_bytes, what, "files")
    }

    /// Like [`ProgressDisplay::start`], naming the items `progress.files` counts.
    pub fn start_counting(
        progress: Arc<Progress>,
        total_bytes: Option<u64>,
        what: &'static str,
        items: &'static str,
    ) -> Self {
        if !std::io::stderr().is_terminal() || super::quiet() {
            return ProgressDisplay {
                stop: None,
                handle: None,
            };
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::spawn(move || {
            let with_total = |t: u64| {
                ProgressBar::new(t).with_style(
                    ProgressStyle::with_template(
                        "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                    )
                    .expect("template")
                    .progress_chars("=> "),
                )
            };
            let mut bar = match total_bytes {
                Some(t) => with_total(t),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template(
                        "{prefix} {spinner} {bytes} {binary_bytes_per_sec} {msg} [{elapsed}]",
                    )
                    .expect("template"),
                ),
            };
            bar.set_prefix(what);
            let update = |bar: &mut ProgressBar| {
                // A job that learns its total late (check --read-data, prune) gets a bar then.
                let late = progress.total_bytes.load(Ordering::Relaxed);
                if bar.length().is_none() && late > 0 {
                    bar.finish_and_clear();
                    *bar = with_total(late);
                    bar.set_prefix(what);
                }
                bar.set_position(progress.bytes.load(Ordering::Relaxed));
                bar.set_message(format!(
                    "{} {items}",
                    progress.files.load(Ordering::Relaxed)
                ));
                bar.tick();
            };
            loop {
                update(&mut bar);
                match rx.recv_timeout(Duration::from_millis(100)) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => break,
                }
            }
            // The last figures: a job shorter than a tick still shows its bar once.
            update(&mut bar);
            bar.finish_and_clear();
        });
        ProgressDisplay {
            stop: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) {
        drop(self.stop.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("256M").unwrap(), 256 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3X").is_err());
        assert_eq!(parse_size("500G").unwrap(), 500 << 30);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5T").unwrap(), 3 << 39);
        assert_eq!(parse_size("64 MB").unwrap(), 64 << 20);
        assert!(parse_size("1.2.3M").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn sizes_print() {
        assert_eq!(super::human(0), "0 B");
        assert_eq!(super::human(1023), "1023 B");
        assert_eq!(super::human(1536), "1.5 KiB");
        assert_eq!(super::human(256 << 20), "256.0 MiB");
        assert_eq!(super::human(3 << 39), "1.5 TiB");
    }
}
