//! lbaws's protocol parsers as a library: pure functions over bytes, with no
//! I/O, no configuration and no global state, so that fuzz targets
//! (`fuzz/`) and unit tests reach exactly the code the server runs. The
//! `lbaws` binary links this library; everything else (processes, sockets,
//! signals) stays in the binary's own modules.

pub mod proto;
