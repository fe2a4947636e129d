//! End-to-end tests of Weir live in `python/` (pytest, real third-party clients and readers);
//! this crate holds the load harness binary `weir-loadgen`.
