// Runs filter/examples/on_log_profile.wasm (the whole filter VM per request, with a
// host written in Rust inside the module) under Node's V8 and prints its time per
// request. The proxy-wasm imports are never called by that example; they are stubbed.
// usage: node wasm_v8.cjs <module.wasm> <requests> [bodies]
const fs = require('fs');
const { WASI } = require('wasi');
const [file, ...args] = process.argv.slice(2);
const wasi = new WASI({ version: 'preview1', args: ['on_log_profile', ...args], env: {} });
const wasm = new WebAssembly.Module(fs.readFileSync(file));
const instance = new WebAssembly.Instance(wasm, {
  wasi_snapshot_preview1: wasi.wasiImport,
  env: new Proxy({}, { get: () => () => 0 }),
});
const start = process.hrtime.bigint();
// The module also exports `_initialize` (it is a proxy-wasm reactor too): start the command.
wasi.start({ exports: { memory: instance.exports.memory, _start: instance.exports._start } });
const us = Number(process.hrtime.bigint() - start) / 1000 / Number(args[0]);
console.log(us.toFixed(3));
