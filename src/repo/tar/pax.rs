//! pax extended header records (`x`, Sun's `X`, global `g`) and the sparse maps of GNU
//! tar's pax sparse formats 0.0, 0.1 and 1.0.

/// The `(key, value)` records of an extended header, in order.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// Splits an extended header into its `(key, value)` records. Each record is
/// `"<len> <key>=<value>\n"`, where `len` counts the whole record: values are taken by
/// length, so they may hold any bytes (binary xattr values hold newlines and NULs).
pub fn records(mut data: &[u8]) -> Result<Records, String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        // GNU tar stops at NUL padding after the last record.
        if data[0] == 0 {
            break;
        }
        let sp = data
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or("a pax record without a length")?;
        let len: usize = std::str::from_utf8(&data[..sp])
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or("a pax record with a bad length")?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("a pax record of length {len} that does not fit"));
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .ok_or("a pax record without `=`")?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

/// A decimal number from a pax record or a sparse map.
pub fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 20 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses a pax time ("1700000000.123456789", "-1.5") into nanoseconds.
pub fn time_ns(v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = decimal(secs.as_bytes())? as i64;
    let mut ns = 0i64;
    for (i, c) in frac.bytes().take(9).enumerate() {
        ns += (c - b'0') as i64 * 10i64.pow(8 - i as u32);
    }
    let t = secs.checked_mul(1_000_000_000)?.checked_add(ns)?;
    Some(if neg { -t } else { t })
}

/// `GNU.sparse.map` (format 0.1): "offset,numbytes,offset,numbytes...".
pub fn map_01(v: &[u8]) -> Option<Vec<(u64, u64)>> {
    if v.is_empty() {
        return Some(Vec::new());
    }
    let nums: Option<Vec<u64>> = v.split(|&b| b == b',').map(decimal).collect();
    let nums = nums?;
    if nums.len() % 2 != 0 {
        return None;
    }
    Some(nums.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_by_length_with_binary_values() {
        let r = records(b"12 path=a/b\n23 SCHILY.xattr.u=\n\0=\n\n\0\0\0").unwrap();
        assert_eq!(r[0], (b"path".to_vec(), b"a/b".to_vec()));
        assert_eq!(r[1], (b"SCHILY.xattr.u".to_vec(), b"\n\0=\n".to_vec()));
        assert_eq!(r.len(), 2);
        assert!(records(b"99 path=x\n").is_err());
        assert!(records(b"x path=x\n").is_err());
        assert!(records(b"9 pathx\n").is_err());
        assert!(records(b"1 ").is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(time_ns(b"12.5"), Some(12_500_000_000));
        assert_eq!(
            time_ns(b"1700000000.123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(time_ns(b"7"), Some(7_000_000_000));
        assert_eq!(time_ns(b"-1.5"), Some(-1_500_000_000));
        assert_eq!(time_ns(b"1.x"), None);
        assert_eq!(time_ns(b"99999999999999999999"), None);
    }

    #[test]
    fn sparse_map_01() {
        assert_eq!(map_01(b"0,5,100,0"), Some(vec![(0, 5), (100, 0)]));
        assert_eq!(map_01(b"0,5,100"), None);
        assert_eq!(map_01(b"0,x"), None);
    }
}
