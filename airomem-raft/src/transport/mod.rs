//! How nodes reach each other: every message between the nodes of a group, Raft's own and
//! the clients' (forwarded commits, read-index requests, membership changes), is a [`Call`]
//! answered by a [`Reply`], sent over a [`Link`].
//!
//! Two transports make links: the in-process [`memory::Network`] with fault controls, for
//! the simulation tests, and [`tcp::TcpTransport`], for processes and machines. Both hand a
//! call that arrives to the same [`Local::handle`], so the simulations run the same
//! server-side code as a deployment.
//!
//! A user picks a transport by passing it to `ReplicatedStore::open`; the trait that makes
//! it one, [`Transport`], is sealed, so openraft's types never appear in the public API.
//!
//! Layers, each importing only from those above it: `contact`; `admin`; `rpc`; `local`;
//! `memory` and `tcp`; `link`; `connector`; this module (the trait and its two impls).

pub(crate) mod admin;
mod connector;
mod contact;
mod link;
mod local;
pub(crate) mod memory;
pub(crate) mod rpc;
pub(crate) mod tcp;

use std::time::Duration;

pub(crate) use connector::Connector;
pub(crate) use contact::{Contact, random_u64};
pub(crate) use link::Link;
pub(crate) use local::{Failure, Local};
pub(crate) use rpc::{Call, Reply};

use crate::Error;

mod sealed {
    /// What makes a type a transport; sealed so that the crate's internals (openraft's
    /// types among them) stay out of the public API.
    pub trait Attach {
        /// Connects node `local` to this transport. `heartbeat` is the node's heartbeat
        /// interval (the pause before retrying an unreachable peer derives from it).
        fn attach(
            &self,
            local: crate::transport::local::Local,
            heartbeat: std::time::Duration,
        ) -> Result<crate::transport::link::Link, crate::Error>;

        /// Whether node `id` is already attached (a second open of it is refused).
        fn is_attached(&self, id: u64) -> bool;

        /// The most bytes of commands one log entry may carry: an entry travels whole.
        fn entry_limit(&self) -> usize;
    }
}

/// A way for the nodes of a group to reach each other: [`crate::Network`] (in one process,
/// with fault controls, for tests) or [`crate::TcpTransport`] (between processes and
/// machines). Pass one to [`crate::ReplicatedStore::open`].
pub trait Transport: sealed::Attach {}

impl<T: sealed::Attach> Transport for T {}

pub(crate) use sealed::Attach;

impl Attach for memory::Network {
    fn attach(&self, local: Local, heartbeat: Duration) -> Result<Link, Error> {
        self.attach_node(local, heartbeat).map(Link::Memory)
    }

    fn is_attached(&self, id: u64) -> bool {
        self.has_node(id)
    }

    fn entry_limit(&self) -> usize {
        // Calls are passed as they are: nothing bounds an entry but memory.
        usize::MAX
    }
}

impl Attach for tcp::TcpTransport {
    fn attach(&self, local: Local, heartbeat: Duration) -> Result<Link, Error> {
        self.attach_node(local, heartbeat).map(Link::Tcp)
    }

    fn is_attached(&self, _id: u64) -> bool {
        self.served()
    }

    fn entry_limit(&self) -> usize {
        self.entry_limit()
    }
}
