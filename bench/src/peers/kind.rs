//! The peers by name ([`PeerKind`]): the report's columns and the names `--probe` takes.

/// The peers, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// airomem 0.7 from crates.io.
    Airomem07,
    /// prevayler-rs 0.2.
    Prevayler,
    /// SQLite through rusqlite.
    Sqlite,
    /// redb.
    Redb,
}

impl PeerKind {
    /// Every peer, in the report's column order.
    pub const ALL: [PeerKind; 4] = [PeerKind::Airomem07, PeerKind::Prevayler, PeerKind::Sqlite, PeerKind::Redb];

    /// The column heading.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Airomem07 => "airomem 0.7",
            PeerKind::Prevayler => "prevayler-rs 0.2",
            PeerKind::Sqlite => "SQLite",
            PeerKind::Redb => "redb 3",
        }
    }

    /// The name `--probe` takes.
    pub fn id(self) -> &'static str {
        match self {
            PeerKind::Airomem07 => "airomem07",
            PeerKind::Prevayler => "prevayler",
            PeerKind::Sqlite => "sqlite",
            PeerKind::Redb => "redb",
        }
    }

    /// How the system is shared between concurrent writers, for the report.
    pub fn sharing(self) -> &'static str {
        match self {
            PeerKind::Airomem07 => {
                "one `Store`, cloned per writer thread (its docs: \"just clone it\"), its async `commit` called \
                 through `Handle::block_on`; `commit` holds the store's write lock across append + `fdatasync`, so \
                 commits run one at a time"
            }
            PeerKind::Prevayler => {
                "`execute_transaction` takes `&mut self`, so the `Prevayler` is wrapped in a `std::sync::RwLock` \
                 (its docs suggest a Mutex or RwLock): commits take the write lock, lookups the read lock"
            }
            PeerKind::Sqlite => {
                "one connection behind a `std::sync::Mutex`, shared by all writer threads (SQLite admits one writer \
                 at a time; with a connection per thread, waiting writers sleep in its busy handler instead, which \
                 was several times slower at 16 and 64 writers in a separate check)"
            }
            PeerKind::Redb => {
                "one `Arc<Database>` shared by all writer threads; `begin_write` waits for the previous write \
                 transaction"
            }
        }
    }

    /// The kind `--probe` names, if any.
    pub fn from_id(id: &str) -> Option<PeerKind> {
        PeerKind::ALL.into_iter().find(|kind| kind.id() == id)
    }
}
