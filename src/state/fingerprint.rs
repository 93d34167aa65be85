//! The fingerprint of stored text. The mirror stores each user's with their properties, so
//! a planner tells an unchanged user from the fingerprint alone, without reading the text.

/// A 64-bit hash of `text` (eight bytes per multiply, MurmurHash3's finaliser). Stored in
/// the state: changing it re-plans every user once after an upgrade.
pub fn fingerprint(text: &str) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let bytes = text.as_bytes();
    let mut h = 0xcbf2_9ce4_8422_2325 ^ (bytes.len() as u64).wrapping_mul(K);
    let mut words = bytes.chunks_exact(8);
    let mix = |h: u64, chunk: &[u8]| {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        (h ^ u64::from_le_bytes(word))
            .wrapping_mul(K)
            .rotate_left(31)
    };
    for chunk in &mut words {
        h = mix(h, chunk);
    }
    h = mix(h, words.remainder());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_see_every_byte_and_the_length_and_stay_stable() {
        let text = r#"{"displayName":"Ada Lovelace","userPrincipalName":"ada@example.com"}"#;
        let base = fingerprint(text);
        assert_eq!(base, fingerprint(text));
        for at in 0..text.len() {
            let mut changed = text.as_bytes().to_vec();
            changed[at] ^= 1;
            let changed = String::from_utf8(changed).unwrap();
            assert_ne!(fingerprint(&changed), base, "a change at byte {at}");
        }
        assert_ne!(
            fingerprint("a"),
            fingerprint("a\0"),
            "zero padding is not length"
        );
        assert_ne!(fingerprint(""), fingerprint("\0"));
        // stored in the state: a new value here re-plans every user once after an upgrade
        assert_eq!(fingerprint("entra-here-sync"), 0x4ccc_707b_4384_32e0);
    }
}
