//! The read path. On PostgreSQL reads go through the sqlx pool like writes. On SQLite they do
//! not: sqlx runs each SQLite connection on a thread of its own and hands every row across a
//! channel, so a 20-row page cost a round of thread switches per row and capped authorized
//! reads near 4,000/s on one core (bench/RESULTS.md §A). Here SQLite reads run on the calling
//! thread through a read-only connection of their own (rusqlite, over the same SQLite library
//! sqlx links), with cached prepared statements. WAL mode lets them run beside the writer and
//! see every committed write, so a write the API has answered is visible to the next read.
//!
//! A read must never stall the control plane's thread (the SIP engine lives there too): the
//! inline connection has a progress handler that interrupts a statement after
//! [`INLINE_BUDGET_OPS`] virtual-machine steps, and an interrupted read is run again, without
//! the budget, on tokio's blocking pool. Indexed page reads finish far inside the budget; a
//! call-record search that scans goes to the pool.

use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// SQLite virtual-machine operations a read may take inline before it is moved off the thread
/// (one check per this many; a few hundred microseconds of work).
const INLINE_BUDGET_OPS: i32 = 50_000;

/// A value bound to a read's `$n` placeholder.
#[derive(Debug, Clone)]
pub enum Arg {
    Int(i64),
    Text(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Arg {
        Arg::Int(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Arg {
        Arg::Text(v.to_string())
    }
}

impl From<&String> for Arg {
    fn from(v: &String) -> Arg {
        Arg::Text(v.clone())
    }
}

/// A column type both drivers decode.
pub trait Col: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql {}
impl<T> Col for T where T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any> + rusqlite::types::FromSql
{}

/// A result row of either driver, read by column name.
pub trait Cols {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error>;
}

impl Cols for AnyRow {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        self.try_get(name)
    }
}

/// A rusqlite row with its statement's column names, read once per statement: rusqlite's own
/// lookup by name asks SQLite for every column's name on every call.
struct NamedRow<'a> {
    row: &'a rusqlite::Row<'a>,
    names: &'a [String],
}

impl Cols for NamedRow<'_> {
    fn col<T: Col>(&self, name: &str) -> Result<T, sqlx::Error> {
        let decode = |e: rusqlite::Error| sqlx::Error::ColumnDecode {
            index: name.to_string(),
            source: Box::new(e),
        };
        let index = self
            .names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| decode(rusqlite::Error::InvalidColumnName(name.to_string())))?;
        self.row.get(index).map_err(decode)
    }
}

/// A stored object built from a row of either driver.
pub trait FromRow: Sized + Send + 'static {
    fn from_row<R: Cols>(r: &R) -> Result<Self, sqlx::Error>;
}

/// Read-only SQLite connections for the read path.
pub struct SqliteReader {
    path: PathBuf,
    /// Used on the calling thread, under the operation budget.
    inline: Mutex<rusqlite::Connection>,
    /// Unbudgeted connections for reads moved to the blocking pool (opened on demand, kept).
    spare: Mutex<Vec<rusqlite::Connection>>,
}

fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let conn = rusqlite::Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn interrupted(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::OperationInterrupted)
}

fn run<T: FromRow>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Arg],
) -> Result<Vec<T>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    for (i, arg) in args.iter().enumerate() {
        // Placeholders are `$1`, `$2`…, named in SQLite; bind by name so their order in the
        // text does not matter.
        let Some(index) = stmt.parameter_index(&format!("${}", i + 1))? else {
            continue;
        };
        match arg {
            Arg::Int(v) => stmt.raw_bind_parameter(index, v)?,
            Arg::Text(v) => stmt.raw_bind_parameter(index, v.as_str())?,
        }
    }
    let names: Vec<String> = stmt.column_names().into_iter().map(String::from).collect();
    let mut rows = stmt.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let row = NamedRow { row, names: &names };
        out.push(T::from_row(&row).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Null, Box::new(e))
        })?);
    }
    Ok(out)
}

impl SqliteReader {
    pub fn open(path: &Path) -> Result<Arc<SqliteReader>, rusqlite::Error> {
        let inline = open(path)?;
        inline.progress_handler(INLINE_BUDGET_OPS, Some(|| true))?;
        Ok(Arc::new(SqliteReader {
            path: path.to_path_buf(),
            inline: Mutex::new(inline),
            spare: Mutex::new(Vec::new()),
        }))
    }

    pub async fn read<T: FromRow>(
        self: &Arc<Self>,
        sql: &str,
        args: Vec<Arg>,
    ) -> Result<Vec<T>, sqlx::Error> {
        // Inline when the connection is free (it always is with one control-plane thread).
        if let Ok(conn) = self.inline.try_lock() {
            match run(&conn, sql, &args) {
                Ok(rows) => return Ok(rows),
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(into_sqlx(e)),
            }
        }
        let reader = Arc::clone(self);
        let sql = sql.to_string();
        tokio::task::spawn_blocking(move || {
            let conn = match reader.spare.lock().map(|mut s| s.pop()) {
                Ok(Some(c)) => c,
                _ => open(&reader.path)?,
            };
            let rows = run(&conn, &sql, &args);
            if let Ok(mut spare) = reader.spare.lock() {
                spare.push(conn);
            }
            rows
        })
        .await
        .map_err(|e| {
            tracing::error!("storage: read task failed: {e}");
            sqlx::Error::WorkerCrashed
        })?
        .map_err(into_sqlx)
    }
}

fn into_sqlx(e: rusqlite::Error) -> sqlx::Error {
    match e {
        rusqlite::Error::FromSqlConversionFailure(_, _, source) => match source.downcast() {
            Ok(inner) => *inner,
            Err(source) => sqlx::Error::Decode(source),
        },
        other => sqlx::Error::Protocol(format!("sqlite read: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Count(i64);

    impl FromRow for Count {
        fn from_row<R: Cols>(r: &R) -> Result<Count, sqlx::Error> {
            Ok(Count(r.col("n")?))
        }
    }

    fn database(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tandem-read-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        let _ = std::fs::remove_file(&path);
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (k TEXT, v INTEGER); \
             INSERT INTO t VALUES ('a', 1), ('b', 2), ('a', 3);",
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn binds_by_placeholder_name() {
        let reader = SqliteReader::open(&database("bind")).unwrap();
        // $2 appears before $1 in the text: bound by name, not by position.
        let rows: Vec<Count> = reader
            .read(
                "SELECT SUM(v) AS n FROM t WHERE v >= $2 AND k = $1",
                vec!["a".into(), Arg::Int(2)],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].0, 3);
    }

    #[tokio::test]
    async fn a_read_over_budget_finishes_off_the_thread() {
        let reader = SqliteReader::open(&database("budget")).unwrap();
        // Millions of VM steps: interrupted inline, then run again on the blocking pool.
        let sql =
            "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
                   SELECT COUNT(*) AS n FROM c";
        let rows: Vec<Count> = reader.read(sql, vec![]).await.unwrap();
        assert_eq!(rows[0].0, 300_000);
        assert_eq!(
            reader.spare.lock().unwrap().len(),
            1,
            "ran on a spare connection"
        );
        // The inline connection is still usable afterwards.
        let rows: Vec<Count> = reader
            .read("SELECT COUNT(*) AS n FROM t", vec![])
            .await
            .unwrap();
        assert_eq!(rows[0].0, 3);
    }

    #[tokio::test]
    async fn a_decode_error_is_an_error() {
        let reader = SqliteReader::open(&database("decode")).unwrap();
        let err = reader
            .read::<Count>("SELECT k AS n FROM t", vec![])
            .await
            .err()
            .expect("text is not an integer");
        assert!(matches!(err, sqlx::Error::ColumnDecode { .. }), "{err}");
    }
}
