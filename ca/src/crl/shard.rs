//! Which CRL shard a certificate belongs to.
//!
//! The shard is chosen once, when the certificate is issued, from its serial
//! (158 random bits, so shards fill evenly), and written into the certificate's
//! CRL distribution point and into its database row. Changing the shard count
//! later only affects certificates issued afterwards.

/// Shard of `serial` among `shards` (`None` when sharding is off).
pub fn of(serial: &[u8], shards: u32) -> Option<u32> {
    if shards == 0 {
        return None;
    }
    // The last eight octets: random in every Muhr serial (see `serial`).
    let mut tail = [0u8; 8];
    let n = serial.len().min(8);
    tail[8 - n..].copy_from_slice(&serial[serial.len() - n..]);
    Some((u64::from_be_bytes(tail) % u64::from(shards)) as u32)
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn spreads_evenly_and_is_stable() {
        assert_eq!(of(&[1, 2, 3], 0), None);
        assert_eq!(of(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 17], 16), Some(1));
        let mut counts = [0u32; 16];
        for i in 0u32..16_000 {
            let serial: Vec<u8> = sha2_like(i);
            counts[of(&serial, 16).unwrap() as usize] += 1;
        }
        // 1,000 expected each; a fair spread stays well inside 800..1200.
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }

    fn sha2_like(i: u32) -> Vec<u8> {
        use sha2::Digest;
        sha2::Sha256::digest(i.to_be_bytes())[..20].to_vec()
    }
}
