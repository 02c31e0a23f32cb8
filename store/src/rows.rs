//! Multi-row statements. A group of certificates or card jobs is written with
//! one statement per table, not one per row: on PostgreSQL every statement is
//! a network round trip, and round trips, not commits, bound issuance rate.

use crate::Backend;

/// Rows per statement: well under both engines' bound-parameter limits.
pub(crate) const CHUNK: usize = 200;

/// `($first, $first+1, ...), (...)` for `rows` rows of `cols` columns. On
/// PostgreSQL, `casts[i]` (e.g. `bytea`) types column i where nothing else
/// tells the planner what a parameter is (VALUES lists in FROM).
pub(crate) fn values(
    backend: Backend,
    rows: usize,
    cols: usize,
    first: usize,
    casts: &[&str],
) -> String {
    let mut s = String::with_capacity(rows * cols * 6);
    let mut n = first;
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            s.push('$');
            s.push_str(&n.to_string());
            if backend == Backend::Postgres
                && let Some(t) = casts.get(c).filter(|t| !t.is_empty())
            {
                s.push_str("::");
                s.push_str(t);
            }
            n += 1;
        }
        s.push(')');
    }
    s
}

/// The row count a statement is written for when `n` rows go in: the next
/// power of two, the rows beyond `n` bound as NULL and matching nothing.
/// PostgreSQL plans a prepared statement anew for its first five runs, and
/// each connection prepares each text once: with one text per row count, a
/// group-committing service had a few thousand texts and planned nearly every
/// statement it ran (about a fifth of PostgreSQL's CPU); with one per power
/// of two it has a few dozen.
pub(crate) fn padded(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

pub(crate) type Query<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Binds `rows` padding rows (see [`padded`]) of NULLs, each typed as
/// `casts` types its column (text where it says nothing).
pub(crate) fn bind_nulls<'q>(mut q: Query<'q>, rows: usize, casts: &[&str]) -> Query<'q> {
    for _ in 0..rows {
        for cast in casts {
            q = match *cast {
                "bytea" => q.bind(None::<Vec<u8>>),
                "bigint" => q.bind(None::<i64>),
                _ => q.bind(None::<String>),
            };
        }
    }
    q
}

/// `$first, $first+1, ...` for an IN list.
pub(crate) fn list(n: usize, first: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        assert_eq!(
            values(Backend::Sqlite, 2, 2, 3, &["", "bytea"]),
            "($3, $4), ($5, $6)"
        );
        assert_eq!(
            values(Backend::Postgres, 1, 2, 1, &["", "bytea"]),
            "($1, $2::bytea)"
        );
        assert_eq!(list(3, 2), "$2, $3, $4");
        assert_eq!(
            [0, 1, 2, 3, 5, 64, 65, 256].map(padded),
            [1, 1, 2, 4, 8, 64, 128, 256]
        );
    }
}
