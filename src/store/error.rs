//! What can go wrong in the store, worded for the operator who has to fix it.

/// A store failure. The Display form says what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {url}: {source}; check `store.url` (and for PostgreSQL that the server is up and PGPASSWORD or ~/.pgpass holds the password)")]
    Connect {
        /// The URL without any password.
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot create the store's directory {dir}: {source}; check `server.data_dir` and its permissions")]
    CreateDir {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bring the store schema at {url} up to date: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("the store at {url} was written by a newer gaitkeeper (it has schema migration {version}, which this version does not know); upgrade gaitkeeper or point `store.url` at another store")]
    NewerSchema { url: String, version: i64 },
    #[error("the store at {url} was created with a different `secrets.key`: its users could not be found and their TOTP secrets could not be opened; restore the original key, or point `store.url` at a new store")]
    WrongKey { url: String },
    #[error("no user {user} in the store (login names are matched exactly, case included; `gaitkeeper users list` shows who is there)")]
    UnknownUser { user: String },
    #[error("{what} is {size} bytes; the store accepts at most {limit}")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("{0}")]
    Invalid(String),
    /// A login recorded in a batch whose transaction failed (the message is that failure's).
    #[error("the login was not recorded: its batch failed ({0})")]
    BatchFailed(String),
    #[error("the TOTP secret of user {user} cannot be opened: it was sealed with another `secrets.key` or was altered; enroll the user again with `gaitkeeper users enroll-totp`")]
    Unseal { user: String },
    #[error("the store holds a value this gaitkeeper cannot read ({0}); was it written by a newer version?")]
    Corrupt(String),
    #[error("store operation `{op}` failed: {source}{}", hint(source))]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn hint(error: &sqlx::Error) -> &'static str {
    match error {
        sqlx::Error::PoolTimedOut => {
            "; every connection stayed busy for `store.busy_timeout`: raise `store.max_connections` or `store.busy_timeout`"
        }
        sqlx::Error::Database(db) if db.message().contains("locked") || db.message().contains("busy") => {
            "; another process held the SQLite file locked for longer than `store.busy_timeout`"
        }
        _ => "",
    }
}

/// Attaches the operation's name to a database error.
pub(crate) fn db(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Database { op, source }
}
