//! PEM as Muhr writes it: LF line endings, the one place PEM is made.

/// `der` as PEM under `label`.
pub fn encode(label: &str, der: &[u8]) -> String {
    der::pem::encode_string(label, der::pem::LineEnding::LF, der).unwrap_or_default()
}

/// A certificate's DER as PEM.
pub fn certificate(der: &[u8]) -> String {
    encode("CERTIFICATE", der)
}
