//! One summary line per reliability family (`scripts/test.sh` prints them after the
//! tests): the family's name, its seed, the cases it ran, the faults it injected (crashes,
//! damages, store faults, signals: what the family is about) and the failures it saw.
//!
//! A family that fails panics before it reports; the failed test is then in the summary's
//! list of failures instead. Included with `#[path = "family/mod.rs"] mod family;`.

use std::io::Write;

/// Records one family's figures: on stderr, and as a tab-separated line appended to the
/// file `VAULTFS_TEST_FAMILY_LOG` names (when set).
pub fn report(family: &str, seed: u64, cases: u64, faults: u64, failures: u64, secs: f64) {
    eprintln!(
        "family {family}: {cases} cases, {faults} faults injected, {failures} failures, \
         {secs:.0} s, seed {seed}"
    );
    if let Ok(path) = std::env::var("VAULTFS_TEST_FAMILY_LOG") {
        let line = format!("{family}\t{seed}\t{cases}\t{faults}\t{failures}\t{secs:.0}\n");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("VAULTFS_TEST_FAMILY_LOG={path}: {e}"));
        f.write_all(line.as_bytes())
            .unwrap_or_else(|e| panic!("VAULTFS_TEST_FAMILY_LOG={path}: {e}"));
    }
}
