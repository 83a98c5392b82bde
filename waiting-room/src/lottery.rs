//! The verifiable draw that orders the pre-queue.
//!
//! Before the on-sale, each event has a secret 32-byte seed whose SHA-256 (the
//! commitment) is public. At the on-sale instant the pre-queue cohort is ordered by
//! [`draw_order`]; afterwards the seed and the drawn order are published, so anyone
//! can check `sha256(seed) == commitment` and recompute the order:
//!
//! ```text
//! key(request) = SHA-256(seed bytes || request id as lowercase hyphenated text)
//! order        = cohort sorted by key ascending (ties, which need a SHA-256
//!                collision, by request id); queue numbers 1, 2, ... in that order
//! ```
//!
//! In Python: `sorted(ids, key=lambda r: (hashlib.sha256(seed + r.encode()).digest(), r))`.

use proto::RequestId;
use sha2::{Digest, Sha256};

/// How the order is computed, as published with the seed.
pub const ALGORITHM: &str = "sort the cohort by SHA-256(seed || request_id as lowercase hyphenated text), \
ascending, ties by request_id; queue numbers 1, 2, ... in that order";

/// A fresh secret seed.
pub fn new_seed() -> [u8; 32] {
    rand::random()
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The public commitment to a seed: its SHA-256, in hex.
pub fn commitment(seed: &[u8]) -> String {
    to_hex(&Sha256::digest(seed))
}

/// The cohort in drawn order.
pub fn draw_order(seed: &[u8], cohort: &[RequestId]) -> Vec<RequestId> {
    let mut keyed: Vec<([u8; 32], RequestId)> = cohort
        .iter()
        .map(|id| {
            let mut hasher = Sha256::new();
            hasher.update(seed);
            hasher.update(id.to_string().as_bytes());
            (hasher.finalize().into(), *id)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(n: usize) -> Vec<RequestId> {
        (0..n).map(|_| RequestId::new()).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_order_whatever_the_input_order() {
        let seed = new_seed();
        let ids = cohort(500);
        let mut reversed = ids.clone();
        reversed.reverse();
        assert_eq!(draw_order(&seed, &ids), draw_order(&seed, &reversed));
    }

    #[test]
    fn the_order_is_a_permutation_and_depends_on_the_seed() {
        let ids = cohort(500);
        let a = draw_order(&new_seed(), &ids);
        let b = draw_order(&new_seed(), &ids);
        let mut sorted_a = a.clone();
        sorted_a.sort();
        let mut sorted_ids = ids.clone();
        sorted_ids.sort();
        assert_eq!(sorted_a, sorted_ids);
        assert_ne!(a, b, "two seeds drew the same order of 500");
        // Creation order (v7 ids sort by time) must not survive the draw.
        assert_ne!(a, sorted_ids);
    }

    #[test]
    fn the_order_matches_the_published_recipe() {
        let seed = [7u8; 32];
        let id: RequestId = "0190e1b0-0000-7000-8000-000000000001".parse().expect("id");
        let other: RequestId = "0190e1b0-0000-7000-8000-000000000002".parse().expect("id");
        let key = |r: &RequestId| {
            let mut h = Sha256::new();
            h.update(seed);
            h.update(r.to_string());
            h.finalize().to_vec()
        };
        let expected = if key(&id) < key(&other) {
            vec![id, other]
        } else {
            vec![other, id]
        };
        assert_eq!(draw_order(&seed, &[id, other]), expected);
        assert_eq!(commitment(&seed), to_hex(&Sha256::digest(seed)));
        assert_eq!(commitment(b"").len(), 64);
    }
}
