//! Which file types an upload may declare (`HERALD_UPLOAD_TYPES`) and
//! whether a file's first bytes are what it declares: a PNG must start
//! like a PNG, a CSV must be text. Types without a known signature in
//! the allowlist are taken on their word.

/// Types allowed when `HERALD_UPLOAD_TYPES` is not set.
pub const DEFAULT_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/csv",
    "application/vnd.ms-excel",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
];

/// Bytes of a text file checked for being text.
const TEXT_PREFIX: usize = 1024;

/// What the first bytes say against the declared type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// They match (or the type has no signature).
    Match,
    /// They do not.
    Mismatch,
}

fn starts(data: &[u8], signature: &[u8]) -> bool {
    // A first piece shorter than the signature is compared as a prefix.
    let n = data.len().min(signature.len());
    data[..n] == signature[..n]
}

fn webp(data: &[u8]) -> bool {
    starts(data, b"RIFF") && (data.len() <= 8 || starts(&data[8..], b"WEBP"))
}

fn text(data: &[u8]) -> bool {
    let head = &data[..data.len().min(TEXT_PREFIX)];
    if head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => true,
        // A character cut by the end of what was looked at is fine.
        Err(e) => e.error_len().is_none(),
    }
}

/// Checks the file's first bytes (`data`: what the first PATCH carries)
/// against the declared, normalized `filetype`.
pub fn check(filetype: &str, data: &[u8]) -> Verdict {
    let ok = match filetype {
        "image/jpeg" => starts(data, &[0xFF, 0xD8, 0xFF]),
        "image/png" => starts(data, b"\x89PNG\r\n\x1a\n"),
        "image/gif" => starts(data, b"GIF87a") || starts(data, b"GIF89a"),
        "image/webp" => webp(data),
        "application/pdf" => starts(data, b"%PDF-"),
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" => {
            starts(data, b"PK\x03\x04")
        }
        // Browsers on machines with Excel declare CSV files as this type.
        "application/vnd.ms-excel" => {
            starts(data, &[0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1]) || text(data)
        }
        "text/csv" | "text/plain" => text(data),
        _ => true,
    };
    if ok {
        Verdict::Match
    } else {
        Verdict::Mismatch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_default_type_takes_its_own_signature_and_refuses_another() {
        let samples: &[(&str, &[u8])] = &[
            ("image/jpeg", b"\xFF\xD8\xFF\xE0\x00\x10JFIF"),
            ("image/png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            ("image/gif", b"GIF89a\x01\x00"),
            ("image/webp", b"RIFF\x24\x00\x00\x00WEBPVP8 "),
            ("application/pdf", b"%PDF-1.7\n"),
            (
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                b"PK\x03\x04\x14\x00",
            ),
            (
                "application/vnd.ms-excel",
                b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1\0",
            ),
            ("text/csv", "name,amount\nZoë,10\n".as_bytes()),
        ];
        for (ty, data) in samples {
            assert_eq!(check(ty, data), Verdict::Match, "{ty}");
        }
        assert_eq!(check("image/png", b"%PDF-1.4"), Verdict::Mismatch);
        assert_eq!(check("image/jpeg", b"\x89PNG\r\n\x1a\n"), Verdict::Mismatch);
        assert_eq!(
            check("image/webp", b"RIFF\x24\x00\x00\x00WAVEfmt "),
            Verdict::Mismatch
        );
        assert_eq!(check("application/pdf", b"<html>"), Verdict::Mismatch);
        assert_eq!(check("text/csv", b"a,b\n\0\0"), Verdict::Mismatch);
        assert_eq!(check("text/csv", b"a,\xFF\xFEb"), Verdict::Mismatch);
        assert_eq!(
            check("application/vnd.ms-excel", b"\0\0\0\0"),
            Verdict::Mismatch
        );
    }

    #[test]
    fn a_short_first_piece_is_compared_as_a_prefix_and_a_cut_character_is_text() {
        assert_eq!(check("image/png", b"\x89P"), Verdict::Match);
        assert_eq!(check("image/png", b"\x89X"), Verdict::Mismatch);
        assert_eq!(
            check("text/csv", "ab,é".as_bytes().split_last().unwrap().1),
            Verdict::Match
        );
        assert_eq!(check("application/x-unknown", b"\0"), Verdict::Match);
    }
}
