//! How a failed command ends: the error's kind, the exit status, and the message on
//! stderr (and, when `--json` was given, a JSON document on stdout).
//!
//! The kinds and statuses are a stable interface for scripts (README, "Scripting"):
//! a kind is never renamed, a status never reused for another meaning. Errors are
//! classified once, here, from the typed errors of the layers below ([`RepoError`],
//! [`BackendError`], clap's), found anywhere in the error's chain; an error of none of
//! them (a message of the command line itself) is the generic kind `error`.

use std::io::Write;

use crate::backend::BackendError;
use crate::fs::MountError;
use crate::repo::RepoError;

/// Success.
pub const EXIT_OK: i32 = 0;
/// A failure of no more specific kind; also `check` finding damage.
pub const EXIT_FAILURE: i32 = 1;
/// Bad arguments or bad input (a malformed archive, a bad name or pattern).
pub const EXIT_USAGE: i32 = 2;
/// A backup or restore that finished but left files out (they are listed on stderr).
pub const EXIT_PARTIAL: i32 = 3;
/// A vault, point, path, policy or task that does not exist.
pub const EXIT_NOT_FOUND: i32 = 4;
/// Another writer holds the repository's lock.
pub const EXIT_LOCKED: i32 = 5;
/// The password opens no key of the repository.
pub const EXIT_AUTH: i32 = 6;
/// A repository object is damaged or missing, or there is no repository there.
pub const EXIT_DAMAGED: i32 = 7;
/// The store could not be reached or failed (S3 errors, local I/O of the repository).
pub const EXIT_STORE: i32 = 8;
/// Refused as asked: already exists, not empty, busy, protected, over quota, old format.
pub const EXIT_REFUSED: i32 = 9;
/// Cancelled (`vaultfs task cancel`, SIGINT), as a shell reports a job stopped so.
pub const EXIT_CANCELLED: i32 = 130;

/// Every (kind, exit status) pair, in the order of the README's table.
pub const KINDS: &[(&str, i32)] = &[
    ("error", EXIT_FAILURE),
    ("internal", EXIT_FAILURE),
    ("io", EXIT_FAILURE),
    ("usage", EXIT_USAGE),
    ("bad_input", EXIT_USAGE),
    ("not_found", EXIT_NOT_FOUND),
    ("locked", EXIT_LOCKED),
    ("wrong_password", EXIT_AUTH),
    ("damaged", EXIT_DAMAGED),
    ("not_a_repository", EXIT_DAMAGED),
    ("unsupported_format", EXIT_DAMAGED),
    ("store", EXIT_STORE),
    ("exists", EXIT_REFUSED),
    ("not_empty", EXIT_REFUSED),
    ("busy", EXIT_REFUSED),
    ("protected", EXIT_REFUSED),
    ("vault_full", EXIT_REFUSED),
    ("old_format", EXIT_REFUSED),
    ("cancelled", EXIT_CANCELLED),
];

/// An error classified elsewhere (another process: the mount daemon) and passed on as
/// text: `[kind] message`.
#[derive(Debug)]
pub struct Relayed {
    pub kind: &'static str,
    pub message: String,
}

impl std::fmt::Display for Relayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Relayed {}

impl Relayed {
    /// `[kind] message` as [`relay`] wrote it (an unknown or missing kind is `error`).
    pub fn parse(line: &str) -> Relayed {
        let (kind, message) = line
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .and_then(|(k, m)| {
                KINDS
                    .iter()
                    .find(|(name, _)| *name == k)
                    .map(|(n, _)| (*n, m))
            })
            .unwrap_or(("error", line));
        Relayed {
            kind,
            message: message.to_string(),
        }
    }
}

/// An error as one line another process turns back into it ([`Relayed::parse`]).
pub fn relay(e: &anyhow::Error) -> String {
    format!("[{}] {}", kind(e), format!("{e:#}").replace('\n', " "))
}

/// The kind of an error, from the first typed error of its chain.
pub fn kind(e: &anyhow::Error) -> &'static str {
    for cause in e.chain() {
        if let Some(r) = cause.downcast_ref::<Relayed>() {
            return r.kind;
        }
        if let Some(r) = cause.downcast_ref::<RepoError>() {
            return repo_kind(r);
        }
        if let Some(b) = cause.downcast_ref::<BackendError>() {
            return backend_kind(b);
        }
        if let Some(m) = cause.downcast_ref::<MountError>() {
            return mount_kind(m);
        }
        if cause.downcast_ref::<clap::Error>().is_some() {
            return "usage";
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return "io";
        }
    }
    "error"
}

fn repo_kind(e: &RepoError) -> &'static str {
    match e {
        RepoError::Backend(b) => backend_kind(b),
        RepoError::WrongPassword(_) => "wrong_password",
        RepoError::NotARepository(_) => "not_a_repository",
        RepoError::AlreadyInitialized(_) | RepoError::VaultExists(_) => "exists",
        RepoError::Config { error, .. } => match error {
            crate::repo::format::ConfigError::Version(_) => "unsupported_format",
            crate::repo::format::ConfigError::BadMagic => "not_a_repository",
            _ => "damaged",
        },
        RepoError::Damaged { .. } => "damaged",
        RepoError::VaultNotFound(_)
        | RepoError::PointNotFound { .. }
        | RepoError::NoPoints(_)
        | RepoError::PathNotFound { .. } => "not_found",
        RepoError::VaultNotEmpty { .. } => "not_empty",
        RepoError::InvalidVaultName(_) | RepoError::BadInput(_) => "bad_input",
        RepoError::Io { .. } => "io",
        RepoError::Locked(_) => "locked",
        RepoError::Protected { .. } => "protected",
        RepoError::VaultFull { .. } => "vault_full",
        RepoError::OldFormat { .. } => "old_format",
        RepoError::Internal(_) => "internal",
        RepoError::Cancelled => "cancelled",
    }
}

fn mount_kind(e: &MountError) -> &'static str {
    match e {
        MountError::NoMountpoint(_) => "not_found",
        MountError::NotADirectory(_) => "bad_input",
        MountError::Busy(_) => "busy",
        MountError::NotEmpty(_) => "not_empty",
        MountError::DiskCache { .. } => "io",
        MountError::Mount { .. } | MountError::Metrics { .. } | MountError::Session { .. } => {
            "error"
        }
    }
}

fn backend_kind(e: &BackendError) -> &'static str {
    match e {
        // An object the repository names is gone: damage, as `check` reports it.
        BackendError::NotFound { .. } | BackendError::OutOfRange { .. } => "damaged",
        BackendError::AlreadyExists { .. } => "exists",
        BackendError::Io { .. } | BackendError::Remote { .. } => "store",
    }
}

/// The exit status of an error kind.
pub fn exit_code(kind: &str) -> i32 {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(EXIT_FAILURE, |(_, c)| *c)
}

/// Whether the command line asks for JSON output (`--json` before any `--`).
pub fn json_requested(argv: &[std::ffi::OsString]) -> bool {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .any(|a| a == "--json")
}

/// The JSON document of a failed command: `{"error": {"kind", "message", "exit_code"}}`.
pub fn error_json(kind: &str, message: &str) -> serde_json::Value {
    serde_json::json!({
        "error": {
            "kind": kind,
            "message": message,
            "exit_code": exit_code(kind),
        }
    })
}

/// Reports a failed command (on stderr; also as JSON on stdout when `json`) and returns
/// its exit status.
pub fn report(e: &anyhow::Error, json: bool) -> i32 {
    let kind = kind(e);
    let message = format!("{e:#}");
    eprintln!("vaultfs: {message}");
    if json {
        print_error_json(kind, &message);
    }
    exit_code(kind)
}

/// Prints the JSON document of a failure on stdout.
pub fn print_error_json(kind: &str, message: &str) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, &error_json(kind, message));
    let _ = writeln!(out);
    let _ = out.flush();
}

/// Ends the process for a command line clap refused (or help and version, which clap
/// reports the same way): usage errors as JSON too when `--json` was given.
pub fn exit_for_clap(e: clap::Error, json: bool) -> ! {
    use clap::error::ErrorKind;
    let is_info = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if json && !is_info {
        let text = e.render().to_string();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("bad arguments")
            .trim_start_matches("error: ")
            .to_string();
        let _ = e.print();
        print_error_json("usage", &first);
        std::process::exit(EXIT_USAGE);
    }
    e.exit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_their_statuses() {
        let e = anyhow::Error::new(RepoError::Locked("held".into()));
        assert_eq!(kind(&e), "locked");
        assert_eq!(exit_code(kind(&e)), EXIT_LOCKED);
        let e = anyhow::Error::new(RepoError::PointNotFound {
            vault: "v".into(),
            point: "p".into(),
        })
        .context("restoring");
        assert_eq!(kind(&e), "not_found");
        let e = anyhow::Error::new(RepoError::Backend(BackendError::Remote {
            op: "get",
            key: "config".into(),
            message: "connection refused".into(),
            transient: true,
        }));
        assert_eq!(kind(&e), "store");
        assert_eq!(exit_code("store"), EXIT_STORE);
        assert_eq!(kind(&anyhow::anyhow!("no such policy")), "error");
        assert_eq!(exit_code("no-such-kind"), EXIT_FAILURE);
        let relayed = anyhow::Error::new(Relayed::parse(&relay(&e)));
        assert_eq!(kind(&relayed), "store");
        assert_eq!(relayed.to_string(), e.to_string());
        assert_eq!(Relayed::parse("plain words").kind, "error");
    }

    #[test]
    fn kinds_are_unique_and_statuses_documented() {
        let mut names: Vec<_> = KINDS.iter().map(|(k, _)| *k).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KINDS.len());
        let readme = include_str!("../../README.md");
        for (k, c) in KINDS {
            assert!(
                readme.contains(&format!("| `{k}` | {c} |")),
                "README's exit status table lacks `{k}` ({c})"
            );
        }
    }

    #[test]
    fn json_is_requested_before_a_double_dash_only() {
        let a = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert!(json_requested(&a(&["vaultfs", "points", "v", "--json"])));
        assert!(!json_requested(&a(&[
            "vaultfs", "cat", "v", "p", "--", "--json"
        ])));
        assert!(!json_requested(&a(&["--json"])));
    }
}
