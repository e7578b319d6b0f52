//! [`Link`]: one node's way out to the others, whichever transport made it.

use std::time::Duration;

use crate::transport::local::{Failure, Local};
use crate::transport::memory::MemoryLink;
use crate::transport::rpc::{Call, Reply};
use crate::transport::tcp::TcpLink;
use crate::types::NodeId;

/// One node's way out to the others, made by its transport when the node opens.
#[derive(Clone)]
pub enum Link {
    Memory(MemoryLink),
    Tcp(TcpLink),
}

impl Link {
    /// Sends `call` to node `to` and waits for its reply, at most `timeout`. A call to this
    /// node itself is handled here, without the network.
    pub(crate) async fn call(&self, to: NodeId, call: Call, timeout: Duration) -> Result<Reply, Failure> {
        let attempt = async {
            match self {
                Link::Memory(link) => link.call(to, call).await,
                Link::Tcp(link) => link.call(to, call).await,
            }
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::AnswerLost(format!("no answer from node {to} within {timeout:?}"))),
        }
    }

    /// The node this link sends from.
    pub(crate) fn local(&self) -> &Local {
        match self {
            Link::Memory(link) => link.local(),
            Link::Tcp(link) => link.local(),
        }
    }

    /// The address a peer is known by (`""` on the in-process network, where ids suffice).
    pub(crate) fn address_of(&self, id: NodeId) -> Option<String> {
        match self {
            Link::Memory(_) => Some(String::new()),
            Link::Tcp(link) => link.address_of(id),
        }
    }

    /// Records where a peer listens (from the membership, or an admin call naming it).
    pub(crate) fn learn_address(&self, id: NodeId, addr: &str) {
        if let Link::Tcp(link) = self {
            link.learn_address(id, addr);
        }
    }

    /// Stops sending and receiving: the node is closing or halted.
    pub(crate) fn leave(&self) {
        match self {
            Link::Memory(link) => link.leave(),
            Link::Tcp(link) => link.leave(),
        }
    }

    /// Returns once the link holds nothing a reopened node needs (its listening socket).
    pub(crate) async fn closed(&self) {
        if let Link::Tcp(link) = self {
            link.closed().await;
        }
    }

    /// The pause before openraft retries a peer it could not reach.
    pub(crate) fn backoff(&self) -> Box<dyn Iterator<Item = Duration> + Send> {
        match self {
            Link::Memory(link) => Box::new(std::iter::repeat(link.backoff())),
            Link::Tcp(link) => Box::new(link.backoff()),
        }
    }
}
