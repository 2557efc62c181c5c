//! cargo-fuzz target `request_parser`: see `mcp_guard_fuzz::request_parser` (fuzz/src/lib.rs).
#![no_main]

#[global_allocator]
static ALLOC: mcp_guard_fuzz::CountingAlloc = mcp_guard_fuzz::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_guard_fuzz::request_parser(data));
