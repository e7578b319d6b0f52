//! The session state on the frozen snapshot path: [`Sessions`]' commands and `execute` over
//! maps whose point-in-time view is cheap ([`airomem::Freeze`], taken by
//! `#[derive(Freeze)]`), so that a snapshot stalls the writers only for the view.
//!
//! * [`ShardedSessions`]: `airomem::collections::ShardedMap` (copy-on-write shards of at most 448 entries).
//! * [`ImblSessions`]: `imbl::HashMap` (a hash array mapped trie; a clone shares it).
//! * [`ImblOrdSessions`]: `imbl::OrdMap` (a persistent B-tree), serialized in key order.
//!
//! Every one of them serializes (postcard) as a struct of one map, as [`Sessions`] does, so a
//! snapshot or journal written by one opens as any other: the measurements build one store
//! and copy it for each [`Variant`].

use std::path::Path;

use airomem::collections::ShardedMap;
use airomem::{Freeze, PostcardSerializer, PostcardStore, Serializer, SnapshotView, State, Store, StoreOptions};
use airomem_workspace::{Sessions, SessionsCommand};
use serde::{Deserialize, Serialize};

/// Sessions in a [`ShardedMap`].
#[derive(Serialize, Deserialize, Default, Debug, Freeze)]
pub struct ShardedSessions {
    /// Live sessions: token to user id.
    pub tokens: ShardedMap<String, u64>,
}

/// Sessions in an `imbl::HashMap`.
#[derive(Serialize, Deserialize, Default, Debug, Freeze)]
pub struct ImblSessions {
    /// Live sessions: token to user id.
    pub tokens: airomem::imbl::HashMap<String, u64>,
}

/// Sessions in an `imbl::OrdMap`.
#[derive(Serialize, Deserialize, Default, Debug, Freeze)]
pub struct ImblOrdSessions {
    /// Live sessions: token to user id.
    pub tokens: airomem::imbl::OrdMap<String, u64>,
}

/// `Sessions::execute` for a map with `insert` and `remove`.
macro_rules! session_state {
    ($state:ty) => {
        impl State for $state {
            type Command = SessionsCommand;

            fn execute(&mut self, command: SessionsCommand) {
                match command {
                    SessionsCommand::CreateSession { token, user_id } => {
                        self.tokens.insert(token, user_id);
                    }
                    SessionsCommand::DeleteSession { token } => {
                        self.tokens.remove(&token);
                    }
                }
            }

            fn snapshot_view<Z: Serializer>(&self) -> Option<SnapshotView<Z>> {
                Some(SnapshotView::of(self))
            }
        }

        impl SessionState for $state {
            fn sessions(&self) -> usize {
                self.tokens.len()
            }

            fn user(&self, token: &str) -> Option<u64> {
                self.tokens.get(token).copied()
            }
        }
    };
}

session_state!(ShardedSessions);
session_state!(ImblSessions);
session_state!(ImblOrdSessions);

/// What the measurements ask of any of the session states.
pub trait SessionState: State<Command = SessionsCommand> {
    /// Live sessions.
    fn sessions(&self) -> usize;
    /// The user id of `token`'s session.
    fn user(&self, token: &str) -> Option<u64>;
}

impl SessionState for Sessions {
    fn sessions(&self) -> usize {
        self.tokens.len()
    }

    fn user(&self, token: &str) -> Option<u64> {
        self.tokens.get(token).copied()
    }
}

/// Which session state a measurement runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// [`Sessions`], `std::collections::HashMap`: the plain path (serialized under the lock).
    Plain,
    /// [`ShardedSessions`].
    Sharded,
    /// [`ImblSessions`].
    Imbl,
    /// [`ImblOrdSessions`].
    ImblOrd,
}

impl Variant {
    /// Every variant, the plain path first.
    pub const ALL: [Variant; 4] = [Variant::Plain, Variant::Sharded, Variant::Imbl, Variant::ImblOrd];

    /// The name on the command line (the memory child's argument).
    pub fn id(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Sharded => "sharded",
            Variant::Imbl => "imbl-hash",
            Variant::ImblOrd => "imbl-ord",
        }
    }

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "`Sessions` (HashMap, plain path)",
            Variant::Sharded => "`ShardedSessions` (ShardedMap)",
            Variant::Imbl => "`ImblSessions` (imbl::HashMap)",
            Variant::ImblOrd => "`ImblOrdSessions` (imbl::OrdMap)",
        }
    }

    /// The variant named `id`.
    pub fn from_id(id: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.id() == id)
    }

    /// Whether its snapshots take a frozen view.
    pub fn frozen(self) -> bool {
        self != Variant::Plain
    }
}

/// Runs `$body` with `$state` bound to the state type of `$variant`.
macro_rules! with_state {
    ($variant:expr, $state:ident => $body:expr) => {
        match $variant {
            $crate::frozen_states::Variant::Plain => {
                type $state = airomem_workspace::Sessions;
                $body
            }
            $crate::frozen_states::Variant::Sharded => {
                type $state = $crate::frozen_states::ShardedSessions;
                $body
            }
            $crate::frozen_states::Variant::Imbl => {
                type $state = $crate::frozen_states::ImblSessions;
                $body
            }
            $crate::frozen_states::Variant::ImblOrd => {
                type $state = $crate::frozen_states::ImblOrdSessions;
                $body
            }
        }
    };
}
pub(crate) use with_state;

/// A store of any [`Variant`], so that measurements can interleave them.
pub enum AnyStore {
    /// [`Variant::Plain`].
    Plain(PostcardStore<Sessions>),
    /// [`Variant::Sharded`].
    Sharded(PostcardStore<ShardedSessions>),
    /// [`Variant::Imbl`].
    Imbl(PostcardStore<ImblSessions>),
    /// [`Variant::ImblOrd`].
    ImblOrd(PostcardStore<ImblOrdSessions>),
}

/// Runs `$body` with `$store` bound to the typed store inside `$any` (an `AnyStore` or a
/// reference to one).
macro_rules! on_store {
    ($any:expr, $store:ident => $body:expr) => {
        match $any {
            $crate::frozen_states::AnyStore::Plain($store) => $body,
            $crate::frozen_states::AnyStore::Sharded($store) => $body,
            $crate::frozen_states::AnyStore::Imbl($store) => $body,
            $crate::frozen_states::AnyStore::ImblOrd($store) => $body,
        }
    };
}
pub(crate) use on_store;

impl AnyStore {
    /// Opens the store in `dir` with the state type of `variant`.
    pub async fn open(variant: Variant, dir: &Path, options: StoreOptions) -> Result<AnyStore, airomem::Error> {
        let z = PostcardSerializer;
        Ok(match variant {
            Variant::Plain => AnyStore::Plain(Store::open_with(z, dir, options).await?),
            Variant::Sharded => AnyStore::Sharded(Store::open_with(z, dir, options).await?),
            Variant::Imbl => AnyStore::Imbl(Store::open_with(z, dir, options).await?),
            Variant::ImblOrd => AnyStore::ImblOrd(Store::open_with(z, dir, options).await?),
        })
    }

    /// Which state it holds.
    pub fn variant(&self) -> Variant {
        match self {
            AnyStore::Plain(_) => Variant::Plain,
            AnyStore::Sharded(_) => Variant::Sharded,
            AnyStore::Imbl(_) => Variant::Imbl,
            AnyStore::ImblOrd(_) => Variant::ImblOrd,
        }
    }

    /// Live sessions.
    pub fn sessions(&self) -> Result<usize, airomem::Error> {
        on_store!(self, store => Ok(store.query()?.sessions()))
    }

    /// Closes the store.
    pub async fn close(self) -> Result<(), airomem::Error> {
        on_store!(self, store => store.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airomem_workspace::token;

    fn commands() -> impl Iterator<Item = SessionsCommand> {
        crate::commits::SessionWorkload::new(7).take(1_000)
    }

    fn encode<T: Serialize>(value: &T) -> Vec<u8> {
        let mut bytes = Vec::new();
        PostcardSerializer.encode(value, &mut bytes).expect("encode");
        bytes
    }

    /// Each state decodes the plain state's bytes into the same sessions, and its frozen
    /// view encodes to its own bytes: a store of one opens as any other.
    fn same_sessions<S: SessionState>() {
        let mut plain = Sessions::default();
        let mut state = S::default();
        for command in commands() {
            plain.execute(command.clone());
            state.execute(command);
        }
        assert_eq!(state.sessions(), plain.tokens.len());
        assert!(plain.tokens.iter().all(|(t, &user)| state.user(t) == Some(user)));
        let decoded: S = PostcardSerializer.decode(&encode(&plain)).expect("decode");
        assert_eq!(decoded.sessions(), plain.tokens.len());
        let view = state.snapshot_view::<PostcardSerializer>().expect("a frozen view");
        let mut bytes = Vec::new();
        view.write_to(&PostcardSerializer, &mut bytes).expect("write the view");
        assert_eq!(bytes, encode(&state));
    }

    #[test]
    fn states_agree_with_sessions() {
        same_sessions::<ShardedSessions>();
        same_sessions::<ImblSessions>();
        same_sessions::<ImblOrdSessions>();
        assert!(Sessions::default().snapshot_view::<PostcardSerializer>().is_none());
    }

    #[test]
    fn the_view_does_not_see_later_changes() {
        let mut state = ShardedSessions::default();
        state.execute(SessionsCommand::CreateSession { token: token(1), user_id: 1 });
        let before = encode(&state);
        let view = state.snapshot_view::<PostcardSerializer>().expect("a frozen view");
        state.execute(SessionsCommand::CreateSession { token: token(2), user_id: 2 });
        let mut bytes = Vec::new();
        assert_eq!(view.write_to(&PostcardSerializer, &mut bytes).expect("write"), 1, "one shard copied");
        assert_eq!(bytes, before);
    }

    #[test]
    fn variants_round_trip_their_ids() {
        for v in Variant::ALL {
            assert_eq!(Variant::from_id(v.id()), Some(v));
        }
    }
}
