// The Taskmill TypeScript shim without any transport (import a transport module separately:
// './transport-tauri.js' in a Tauri app, './transport-node.js' in Node).
export * from './client.js';
export { LineDecoder, TauriLineJoiner } from './framing.js';
