//! The cluster secret, and the set of secrets a node accepts while one is being rotated.

use std::fmt;
use std::path::Path;

use crate::Error;

/// The fewest bytes a secret may have. HMAC-SHA256 takes keys of any length, but a short
/// one can be guessed offline from one recorded handshake.
const MIN_SECRET_LEN: usize = 16;

/// The secret shared by every node of a cluster and by its admin clients. Each new TCP
/// connection starts with a mutual challenge-response (HMAC-SHA256 over fresh random nonces),
/// so both ends prove they know the secret without ever sending it. Generate it at random
/// (at least 16 bytes, e.g. `openssl rand -hex 32 > cluster.secret`) and keep the file
/// readable by the node's user only.
///
/// The handshake authenticates the connection; it does not encrypt or sign the frames that
/// follow. Run the cluster on a network where nobody can inject into a TCP stream, or under a
/// VPN or TLS tunnel.
///
/// # Rotating the secret without downtime
///
/// Every node proves itself with one secret and accepts peers proving themselves with that
/// one or any older one it was told to accept still. To replace `old` by `new`:
///
/// 1. Restart the nodes one by one to prove with `old` and accept `new` as well. Every node
///    still proves with `old`, which all of them accept.
/// 2. Restart them one by one to prove with `new` (still accepting `old`). Each node accepts
///    both, so old-proving and new-proving nodes keep talking. Move admin clients to `new`.
/// 3. Restart them one by one to drop `old`.
///
/// Skipping step 1 cuts a node proving with `new` off from the nodes that do not accept it
/// yet.
///
/// `Debug` prints no byte of the secret.
#[derive(Clone)]
pub struct Secret {
    bytes: Vec<u8>,
}

impl Secret {
    /// A secret of the given bytes; refused ([`Error::InvalidConfig`]) below 16 bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, Error> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(Error::InvalidConfig {
                reason: format!(
                    "the cluster secret has {} bytes; at least {MIN_SECRET_LEN} are needed (generate one at random)",
                    bytes.len()
                ),
            });
        }
        Ok(Secret { bytes })
    }

    /// Reads a secret from a file, without its trailing whitespace (so that `echo` and
    /// editors' final newlines do not become part of it). A file that cannot be read is
    /// [`Error::Io`]; one too short is [`Error::InvalidConfig`] naming the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Secret, Error> {
        let path = path.as_ref();
        let mut bytes = std::fs::read(path).map_err(|e| Error::io("read the cluster secret", path, e))?;
        warn_if_others_can_read(path);
        let kept = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |last| last + 1);
        bytes.truncate(kept);
        Secret::new(bytes).map_err(|e| match e {
            Error::InvalidConfig { reason } => Error::InvalidConfig { reason: format!("{}: {reason}", path.display()) },
            other => other,
        })
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(unix)]
fn warn_if_others_can_read(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", meta.permissions().mode() & 0o777),
            "the cluster secret file is accessible to other users than its owner"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_others_can_read(_path: &Path) {}

/// The secret a node proves itself with, and the ones it accepts from others during a
/// rotation (see [`Secret`]).
#[derive(Clone, Debug)]
pub(crate) struct Keyring {
    current: Secret,
    also_accepted: Vec<Secret>,
}

impl Keyring {
    /// Proves with `current` and accepts only it.
    pub(crate) fn new(current: Secret) -> Keyring {
        Keyring { current, also_accepted: Vec::new() }
    }

    /// Accepts peers proving themselves with `other` too.
    pub(crate) fn accept_also(mut self, other: Secret) -> Keyring {
        self.also_accepted.push(other);
        self
    }

    /// The secret this node proves itself with.
    pub(crate) fn current(&self) -> &Secret {
        &self.current
    }

    /// Every secret a peer may prove itself with, `current` first.
    pub(crate) fn accepted(&self) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.current).chain(&self.also_accepted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(Secret::new(vec![7; 15]), Err(Error::InvalidConfig { .. })));
        assert!(Secret::new(vec![7; 16]).is_ok());
    }

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("correct horse battery staple").expect("long enough");
        let ring = Keyring::new(s.clone()).accept_also(s.clone());
        let shown = format!("{s:?} {ring:?}");
        assert!(!shown.contains("horse"), "{shown}");
    }

    #[test]
    fn from_file_trims_trailing_whitespace_and_names_the_file() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let file = dir.path().join("secret");
        std::fs::write(&file, b" 0123456789abcdef \r\n\n").expect("writes");
        assert_eq!(Secret::from_file(&file).expect("valid").as_bytes(), b" 0123456789abcdef");

        std::fs::write(&file, b"short\n").expect("writes");
        let Err(Error::InvalidConfig { reason }) = Secret::from_file(&file) else { panic!("too short") };
        assert!(reason.contains(&file.display().to_string()), "{reason}");

        let missing = dir.path().join("missing");
        assert!(matches!(Secret::from_file(&missing), Err(Error::Io { path, .. }) if path == missing));
    }

    #[test]
    fn a_keyring_accepts_current_first_then_the_others() {
        let a = Secret::new("aaaaaaaaaaaaaaaa").expect("valid");
        let b = Secret::new("bbbbbbbbbbbbbbbb").expect("valid");
        let ring = Keyring::new(a).accept_also(b);
        assert_eq!(ring.current().as_bytes(), b"aaaaaaaaaaaaaaaa");
        let accepted: Vec<_> = ring.accepted().map(Secret::as_bytes).collect();
        assert_eq!(accepted, [&b"aaaaaaaaaaaaaaaa"[..], &b"bbbbbbbbbbbbbbbb"[..]]);
    }
}
