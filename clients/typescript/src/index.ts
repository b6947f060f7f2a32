// `@taskmill/client`: the Taskmill client without any transport. Import the transport of your
// platform from its own entry: `@taskmill/client/tauri` (the Rust side owns the sidecar; the
// default for Tauri apps), `@taskmill/client/tauri-shell` (the page spawns it with the shell
// plugin) or `@taskmill/client/node` (child_process).
export * from './client.js';
export { LineDecoder, TauriLineJoiner } from './framing.js';
