//! cargo-fuzz target `sse_scanner`: see `mcp_guard_fuzz::sse_scanner` (fuzz/src/lib.rs).
#![no_main]

#[global_allocator]
static ALLOC: mcp_guard_fuzz::CountingAlloc = mcp_guard_fuzz::CountingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_guard_fuzz::sse_scanner(data));
