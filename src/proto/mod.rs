//! Parsers for what arrives from the outside: leaves below `http/`. Each takes
//! bytes and limits and returns a value or a refusal; none blocks, logs or
//! panics, whatever the input (the fuzz targets in `fuzz/` hold them to it).

pub mod cgi_head;
pub mod chunked;
pub mod head;
pub mod target;
