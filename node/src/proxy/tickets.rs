//! Session-ticket keys shared by every node of a cluster, so a client that resumes its TLS
//! session on another node (a load balancer spreading connections) skips the full
//! handshake there too.
//!
//! The keys never travel: each node derives them from the same secret file
//! (`--tls-ticket-key-file`, distributed like the nodes' private keys, never in Git) and
//! the clock: the key of epoch `e = unix_time / rotation` is HKDF-SHA256(secret, e), so all
//! nodes use the same key at the same time and the keys rotate without coordination. A
//! ticket is sealed with ChaCha20-Poly1305 (rustls's own choice) under the current epoch's
//! key and opened under the previous, current or next epoch's (nodes' clocks differ a
//! little), so a ticket lives between one and two rotations. Rotating the secret file
//! (restart with a new one) ends every outstanding ticket, as it should after a leak.

use std::sync::Mutex;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf::{self, KeyType, Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// A secret shorter than this is refused.
pub const MIN_SECRET_BYTES: usize = 32;
/// Tickets are accepted for up to two rotations, which TLS 1.3 caps at 7 days (RFC 8446
/// section 4.6.1), so a rotation is at most half of that.
const MAX_ROTATION_SECS: u64 = 7 * 24 * 3600 / 2;
const NAME_LEN: usize = 16;

/// `ProducesTickets` with keys derived from a shared secret and the epoch.
pub struct SharedTickets {
    prk: hkdf::Prk,
    rotation_secs: u64,
    keys: Mutex<Vec<EpochKey>>,
    rng: SystemRandom,
}

struct EpochKey {
    epoch: u64,
    name: [u8; NAME_LEN],
    key: LessSafeKey,
}

impl std::fmt::Debug for SharedTickets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTickets").field("rotation_secs", &self.rotation_secs).finish_non_exhaustive()
    }
}

struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl SharedTickets {
    pub fn new(secret: &[u8], rotation: std::time::Duration) -> anyhow::Result<Self> {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "the ticket key file holds {} bytes; at least {MIN_SECRET_BYTES} random bytes are needed \
             (e.g. `head -c 48 /dev/urandom > ticket.key`, the same file on every node)",
            secret.len()
        );
        anyhow::ensure!(
            (60..=MAX_ROTATION_SECS).contains(&rotation.as_secs()),
            "the ticket key rotation must be between 1m and 84h (a ticket lives up to two rotations, and TLS 1.3 \
             allows at most 7 days)"
        );
        Ok(SharedTickets {
            prk: Salt::new(HKDF_SHA256, b"raftgate session tickets v1").extract(secret),
            rotation_secs: rotation.as_secs(),
            keys: Mutex::new(Vec::new()),
            rng: SystemRandom::new(),
        })
    }

    fn epoch_now(&self) -> u64 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        now / self.rotation_secs
    }

    fn derive(&self, epoch: u64) -> EpochKey {
        let e = epoch.to_be_bytes();
        let mut name = [0u8; NAME_LEN];
        self.prk
            .expand(&[b"name", &e], Len(NAME_LEN))
            .and_then(|okm| okm.fill(&mut name))
            .expect("HKDF output of 16 bytes");
        let key: UnboundKey =
            self.prk.expand(&[b"key", &e], &CHACHA20_POLY1305).map(UnboundKey::from).expect("HKDF output of a key");
        EpochKey { epoch, name, key: LessSafeKey::new(key) }
    }

    /// Runs `f` on the keys of the epochs around now (previous, current, next), deriving
    /// the ones not yet derived and forgetting older ones.
    fn with_keys<T>(&self, f: impl FnOnce(&[EpochKey], u64) -> T) -> T {
        let now = self.epoch_now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.retain(|k| k.epoch + 1 >= now && k.epoch <= now + 1);
        for e in [now.saturating_sub(1), now, now + 1] {
            if !keys.iter().any(|k| k.epoch == e) {
                let k = self.derive(e);
                keys.push(k);
            }
        }
        f(&keys, now)
    }

    /// A short public fingerprint of the current key's name, to compare nodes.
    pub fn fingerprint(&self) -> String {
        self.with_keys(|keys, now| keys.iter().find(|k| k.epoch == now).map(|k| hex::encode(&k.name[..6])))
            .unwrap_or_default()
    }
}

impl rustls::server::ProducesTickets for SharedTickets {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(self.rotation_secs).unwrap_or(u32::MAX)
    }

    /// `name (16) | nonce (12) | sealed plaintext | tag (16)`; the name is the AAD.
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        self.with_keys(|keys, now| {
            let k = keys.iter().find(|k| k.epoch == now)?;
            let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + aead::MAX_TAG_LEN);
            out.extend_from_slice(&k.name);
            out.extend_from_slice(&nonce);
            out.extend_from_slice(plain);
            let tag = k
                .key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(k.name),
                    &mut out[NAME_LEN + NONCE_LEN..],
                )
                .ok()?;
            out.extend_from_slice(tag.as_ref());
            Some(out)
        })
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        // Tickets are attacker-controlled: bound them before any work.
        if ticket.len() < NAME_LEN + NONCE_LEN + aead::MAX_TAG_LEN || ticket.len() > 16 * 1024 {
            return None;
        }
        let (name, rest) = ticket.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        self.with_keys(|keys, _| {
            let k = keys.iter().find(|k| k.name[..] == *name)?;
            let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
            let mut buf = sealed.to_vec();
            let plain = k.key.open_in_place(nonce, Aad::from(k.name), &mut buf).ok()?;
            Some(plain.to_vec())
        })
    }
}

#[cfg(test)]
mod tests {
    use rustls::server::ProducesTickets;

    use super::*;

    #[test]
    fn nodes_with_one_secret_open_each_others_tickets_and_nobody_else_does() {
        let secret = [7u8; 48];
        let (a, b) = (
            SharedTickets::new(&secret, std::time::Duration::from_secs(3600)).unwrap(),
            SharedTickets::new(&secret, std::time::Duration::from_secs(3600)).unwrap(),
        );
        let other = SharedTickets::new(&[8u8; 48], std::time::Duration::from_secs(3600)).unwrap();
        let t = a.encrypt(b"session state").unwrap();
        assert_eq!(b.decrypt(&t).as_deref(), Some(&b"session state"[..]));
        assert_eq!(other.decrypt(&t), None);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), other.fingerprint());
        // Tampered, truncated, empty.
        let mut bad = t.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(b.decrypt(&bad), None);
        assert_eq!(b.decrypt(&t[..20]), None);
        assert_eq!(b.decrypt(&[]), None);
        // Each ticket has its own nonce.
        assert_ne!(a.encrypt(b"x").unwrap(), a.encrypt(b"x").unwrap());
        assert!(SharedTickets::new(&[1u8; 16], std::time::Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn a_ticket_outlives_one_epoch_but_not_three() {
        let t = SharedTickets::new(&[9u8; 32], std::time::Duration::from_secs(3600)).unwrap();
        let now = t.epoch_now();
        let k = t.derive(now - 2);
        // Sealed under an epoch two rotations ago: its key is no longer among those tried.
        let mut buf = b"old".to_vec();
        let nonce = [0u8; NONCE_LEN];
        let tag =
            k.key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(k.name), &mut buf).unwrap();
        let ticket = [&k.name[..], &nonce[..], &buf, tag.as_ref()].concat();
        assert_eq!(t.decrypt(&ticket), None);
        let k = t.derive(now - 1);
        let mut buf = b"recent".to_vec();
        let tag =
            k.key.seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(k.name), &mut buf).unwrap();
        let ticket = [&k.name[..], &nonce[..], &buf, tag.as_ref()].concat();
        assert_eq!(t.decrypt(&ticket).as_deref(), Some(&b"recent"[..]));
    }
}
