//! How a failed lease call reads: rclone's operation, exit code and meaning first, then its
//! cause; and which failures are worth another attempt (rclone's temporary errors and lost
//! connections, never a refusal).

use crate::error::Error;

/// Puts the failed rclone operation, its exit code and meaning first, and rclone's own last
/// line (the cause) after it: "rclone cat (lease) failed with exit code 1 (…): <cause>".
pub(super) fn rclone_first(e: Error) -> Error {
    let Error::Other(inner) = &e else {
        return e;
    };
    let Some(rclone) = inner.chain().find_map(|c| match c.downcast_ref::<Error>() {
        Some(Error::Rclone {
            operation,
            code,
            meaning,
            cause,
            stats,
        }) => Some(Error::Rclone {
            operation: operation.clone(),
            code: *code,
            meaning,
            cause: cause.clone(),
            stats: stats.clone(),
        }),
        _ => None,
    }) else {
        return e;
    };
    let cause = inner.to_string();
    // The rclone error stays reachable (as the context) for `rclone_code`.
    Error::Other(anyhow::anyhow!(cause).context(rclone))
}

/// Whether an error of a lease call is rclone's temporary error or a connection failure.
pub(super) fn is_retryable(e: &Error) -> bool {
    match e {
        Error::Other(inner) => inner
            .downcast_ref::<Error>()
            .is_some_and(Error::is_retryable),
        other => other.is_retryable(),
    }
}

/// rclone's exit code in an error, if the error is an rclone failure (possibly with context).
pub(super) fn rclone_code(e: &Error) -> Option<i32> {
    match e {
        Error::Rclone { code, .. } => Some(*code),
        Error::Other(inner) => match inner.downcast_ref::<Error>() {
            Some(Error::Rclone { code, .. }) => Some(*code),
            _ => inner.chain().find_map(|c| match c.downcast_ref::<Error>() {
                Some(Error::Rclone { code, .. }) => Some(*code),
                _ => None,
            }),
        },
        _ => None,
    }
}
