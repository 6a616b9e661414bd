//! Parsers for what arrives from the outside: leaves below `http/`. Each takes
//! bytes and limits and returns a value or a refusal; none blocks, logs or
//! panics, whatever the input (the fuzz targets in `fuzz/` hold them to it).

pub mod cgi_head;
pub mod chunked;
pub mod head;
pub mod proxy;
pub mod target;
pub mod template;
pub mod vhost;

/// A token character (RFC 9110 5.6.2): what methods, field names and
/// chunk-extension names are made of.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}
