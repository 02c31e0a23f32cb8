//! Certificate serial numbers: 20 octets from the system CSPRNG, top bit clear
//! (positive) and second bit set (so the encoding is always exactly 20 octets,
//! the RFC 5280 maximum). That leaves 158 random bits, well above the 64 that
//! CA/B requires and the 128 Muhr promises.

use x509_cert::serial_number::SerialNumber;

/// Octets in every serial Muhr issues: the RFC 5280 §4.1.2.2 maximum.
pub const SERIAL_LEN: usize = 20;

/// A fresh random serial, shaped as the module documentation describes.
/// Fails only when the system random generator does.
pub fn generate() -> Result<SerialNumber, String> {
    let mut bytes = [0u8; SERIAL_LEN];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "system random generator failed".to_string())?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(|e| e.to_string())
}

/// Upper-case hex without separators, as `openssl x509 -serial` prints it.
pub fn to_hex(serial: &SerialNumber) -> String {
    hex::encode_upper(serial.as_bytes())
}

/// Accepts what operators paste: any case, optional `0x`, optional colons.
pub fn normalize_hex(input: &str) -> Result<String, String> {
    let s: String = input
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    if s.is_empty() || s.len() > 2 * (SERIAL_LEN + 1) || !s.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{input:?} is not a serial number in hex"));
    }
    let s = if s.len() % 2 == 1 { format!("0{s}") } else { s };
    Ok(s.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_full_length_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        for s in [a, b] {
            assert_eq!(s.as_bytes().len(), SERIAL_LEN);
            assert!(s.as_bytes()[0] & 0x80 == 0 && s.as_bytes()[0] & 0x40 != 0);
            assert_eq!(to_hex(&s).len(), 40);
        }
        assert_eq!(normalize_hex("0x4a:0b").unwrap(), "4A0B");
        assert_eq!(normalize_hex("abc").unwrap(), "0ABC");
        assert!(normalize_hex("xyz").is_err());
        assert!(normalize_hex("").is_err());
    }
}
