// Entry point of the example app: asks the Rust side for the sidecar's arguments, starts the
// sidecar through the shell plugin (TauriTransport) and shows its tasks.
import { invoke } from '@tauri-apps/api/core';
import { App } from './app/app.js';
import { Store } from './app/store.js';
import { TaskmillClient } from './taskmill/client.js';
import { TauriTransport } from './taskmill/transport-tauri.js';

async function main(): Promise<void> {
  const root = document.getElementById('app')!;
  // `--parent-pid <app> --db <app data>/tasks.db --allow-path <Pictures> --log-level info
  // --log-file <app logs>/sidecar.log`, in the order capabilities/default.json validates.
  const args = await invoke<string[]>('sidecar_args');
  const at = args.indexOf('--allow-path');
  const folder = at >= 0 ? (args[at + 1] ?? '') : '';

  const transport = new TauriTransport({ program: 'binaries/taskmill-sidecar', args });
  const client = new TaskmillClient({
    transport,
    logger: (line, parsed) => console.debug('[sidecar]', parsed ?? line),
    onError: (err, detail) => console.warn('[taskmill]', err.message, detail?.line ?? ''),
  });
  // Tauri v2 leaves sidecars running when the app exits: tell the Rust side which process to
  // end (src-tauri/src/main.rs kills it on RunEvent::Exit).
  client.listen('sidecar.ready', (ready) => {
    void invoke('register_sidecar_pid', { pid: transport.pid ?? ready.pid });
  });
  client.listen('exited', () => {
    void invoke('register_sidecar_pid', { pid: null });
  });

  const store = new Store(client);
  new App(root, client, store, { folder });
  await store.start();
}

main().catch((err: unknown) => {
  const box = document.createElement('pre');
  box.className = 'fatal';
  box.textContent = `Taskmill could not start: ${err instanceof Error ? err.message : String(err)}`;
  document.body.append(box);
});
