//! Bytes as lowercase hexadecimal: certificate serials, fingerprints and token hashes.

/// `bytes` as two lowercase hex digits each, without separators.
pub fn encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_digits_a_byte() {
        assert_eq!(super::encode(&[0, 0x0a, 0xff]), "000aff");
        assert_eq!(super::encode(&[]), "");
    }
}
