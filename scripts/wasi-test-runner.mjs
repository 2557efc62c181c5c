// Cargo runner for wasm32-wasip1 test binaries (`make test`: `cargo test --lib --target
// wasm32-wasip1`): runs the filter's unit tests as the Wasm module Envoy would load, simd128
// included, in V8 (Node's WASI preview1), the engine of Envoy's envoy.wasm.runtime.v8.
//
//   node scripts/wasi-test-runner.mjs <test.wasm> [libtest args...]
//
// proxy-wasm hostcalls (imports outside wasi_snapshot_preview1) are stubbed to return 0 only so
// the module instantiates: the unit tests drive the logic through fake hosts and never reach
// the glue in src/wasm.rs. A failing test panics, which traps (panic = abort on wasm32), and
// the runner exits non-zero. The working directory is preopened at its own path, so tests that
// read committed data (bench/data/) by absolute path find it.
import { WASI } from 'node:wasi';
import fs from 'node:fs';

const [, , wasm, ...args] = process.argv;
const wasi = new WASI({
  version: 'preview1',
  args: [wasm, ...args],
  env: {},
  preopens: { [process.cwd()]: process.cwd() },
  returnOnExit: true,
});
const module = await WebAssembly.compile(fs.readFileSync(wasm));
const imports = wasi.getImportObject();
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module !== 'wasi_snapshot_preview1') {
    imports[imp.module] ??= {};
    imports[imp.module][imp.name] = () => 0;
  }
}
const instance = await WebAssembly.instantiate(module, imports);
// The test binary exports `_initialize` next to `_start` (the crate is also a cdylib), which
// Node's WASI.start refuses; it starts the command.
const exports = Object.fromEntries(
  Object.entries(instance.exports).filter(([name]) => name !== '_initialize'),
);
process.exitCode = wasi.start({ exports });
