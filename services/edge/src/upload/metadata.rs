//! The `Upload-Metadata` header of tus (comma-separated `key base64value`
//! pairs) and Herald's rules for it: `filename` and `filetype` are
//! required, `documentType`, `propertyId` and `guestId` are kept, and any
//! other key (Uppy sends `name`, `type`, `relativePath`, …) is ignored.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
pub use herald_proto::upload::UploadMetadata;

/// Longest `Upload-Metadata` header taken.
pub const MAX_HEADER_BYTES: usize = 4096;
/// Longest file name, in bytes of UTF-8.
const MAX_FILENAME: usize = 255;
/// Longest `documentType`.
const MAX_DOCUMENT_TYPE: usize = 64;
/// Longest `guestId`.
const MAX_GUEST_ID: usize = 128;

/// Parses and checks the header; the error says what is wrong.
pub fn parse(header: &str) -> Result<UploadMetadata, String> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(format!(
            "Upload-Metadata is longer than {MAX_HEADER_BYTES} bytes"
        ));
    }
    let mut pairs = BTreeMap::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once(' ') {
            Some((k, v)) => (k, v.trim()),
            None => (pair, ""),
        };
        let raw = STANDARD
            .decode(value)
            .map_err(|_| format!("Upload-Metadata: the value of {key} is not base64"))?;
        let text = String::from_utf8(raw)
            .map_err(|_| format!("Upload-Metadata: the value of {key} is not UTF-8"))?;
        if pairs.insert(key.to_owned(), text).is_some() {
            return Err(format!("Upload-Metadata: {key} is given twice"));
        }
    }
    let filename = pairs
        .remove("filename")
        .ok_or("Upload-Metadata must name filename")?;
    check_filename(&filename)?;
    let filetype = normalize_type(
        &pairs
            .remove("filetype")
            .ok_or("Upload-Metadata must name filetype")?,
    )?;
    let document_type = pairs.remove("documentType");
    if let Some(d) = &document_type {
        check_text("documentType", d, MAX_DOCUMENT_TYPE)?;
    }
    let property_id = pairs.remove("propertyId");
    if let Some(p) = &property_id {
        herald_proto::subject::check_token("propertyId", p).map_err(|e| e.to_string())?;
        if p == herald_proto::subject::ORG_WIDE {
            return Err("propertyId _ means no property: leave it out".into());
        }
    }
    let guest_id = pairs.remove("guestId");
    if let Some(g) = &guest_id {
        check_text("guestId", g, MAX_GUEST_ID)?;
    }
    Ok(UploadMetadata {
        filename,
        filetype,
        document_type,
        property_id,
        guest_id,
    })
}

/// The header form of `metadata`, as HEAD answers it.
pub fn header(metadata: &UploadMetadata) -> String {
    metadata
        .fields()
        .map(|(k, v)| format!("{k} {}", STANDARD.encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn check_filename(name: &str) -> Result<(), String> {
    check_text("filename", name, MAX_FILENAME)?;
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err("filename must not contain / or \\ or be . or ..".into());
    }
    Ok(())
}

fn check_text(key: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max {
        return Err(format!("{key} must be 1 to {max} bytes"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{key} must not contain control characters"));
    }
    Ok(())
}

/// `Type/Sub; charset=x` → `type/sub`; an error unless it has that form.
pub fn normalize_type(declared: &str) -> Result<String, String> {
    let base = declared.split(';').next().unwrap_or("").trim();
    let ok = base.split_once('/').is_some_and(|(t, s)| {
        !t.is_empty()
            && !s.is_empty()
            && base.len() <= 127
            && base
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/.+-_".contains(&b))
            && base.bytes().filter(|&b| b == b'/').count() == 1
    });
    if !ok {
        return Err(format!("filetype {declared:?} is not a MIME type"));
    }
    Ok(base.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        STANDARD.encode(s)
    }

    #[test]
    fn parses_the_fields_and_ignores_other_keys() {
        let header = format!(
            "filename {},filetype {},propertyId {},guestId {},documentType {},relativePath {},is_confidential",
            b64("passport scan.pdf"),
            b64("Application/PDF; x=1"),
            b64("p1"),
            b64("g-7"),
            b64("passport"),
            b64("a/b"),
        );
        let m = parse(&header).unwrap();
        assert_eq!(m.filename, "passport scan.pdf");
        assert_eq!(m.filetype, "application/pdf");
        assert_eq!(m.property_id.as_deref(), Some("p1"));
        assert_eq!(m.guest_id.as_deref(), Some("g-7"));
        assert_eq!(m.document_type.as_deref(), Some("passport"));
        // The header form parses back to the same.
        assert_eq!(parse(&super::header(&m)).unwrap(), m);
    }

    #[test]
    fn refuses_what_breaks_a_rule() {
        let ok_type = format!("filetype {}", b64("image/png"));
        let cases = [
            ok_type.clone(),                                                      // no filename
            format!("filename {}", b64("a.png")),                                 // no filetype
            format!("filename {},{ok_type}", b64("../x")),                        // a path
            format!("filename {},{ok_type}", b64("a\nb")), // control character
            format!("filename {},{ok_type}", b64(&"x".repeat(256))), // too long
            format!("filename {},filetype {}", b64("a"), b64("png")), // not a MIME type
            format!("filename {},{ok_type},propertyId {}", b64("a"), b64("p.1")), // not a token
            format!("filename %%%,{ok_type}"),             // not base64
            format!("filename {},filename {},{ok_type}", b64("a"), b64("b")), // twice
            "x".repeat(MAX_HEADER_BYTES + 1),
        ];
        for c in cases {
            assert!(parse(&c).is_err(), "accepted {c:?}");
        }
    }
}
