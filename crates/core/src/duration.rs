//! Durations as written on the command line and in logs (`30s`, `1h30m`, `250ms`, `2d`): one
//! syntax for every flag, every log line and the operator's resources.

use std::time::Duration;

/// Parses durations like `30s`, `1m`, `1h30m`, `500ms`, `2d` (a sequence of number+unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration (use e.g. 30s, 1m, 1h30m)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("invalid duration '{s}' (use e.g. 30s, 1m, 1h30m)"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("number too large in duration '{s}'"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            "" => return Err(format!("missing unit in duration '{s}' (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "unknown unit '{other}' in duration '{s}' (ms, s, m, h or d)"
                ));
            }
        };
        total = unit
            .checked_mul(
                u32::try_from(n).map_err(|_| format!("number too large in duration '{s}'"))?,
            )
            .and_then(|part| total.checked_add(part))
            .ok_or_else(|| format!("duration '{s}' is too large"))?;
        rest = &rest[unit_len..];
    }
    if total.is_zero() {
        return Err(format!("duration '{s}' must be greater than zero"));
    }
    Ok(total)
}

/// Formats a duration the way it is written on the command line (`1h30m`, `45s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if out.is_empty() { "0s".into() } else { out }
}
