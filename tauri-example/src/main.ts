// Entry point of the example app: the Rust side runs the sidecar (tauri-plugin-taskmill); the
// page drives it through the plugin (PluginTransport) and shows its tasks.
import { invoke } from '@tauri-apps/api/core';
import { App } from './app/app.js';
import { Store } from './app/store.js';
import { TaskmillClient } from './taskmill/client.js';
import { PluginTransport } from './taskmill/transport-plugin.js';

async function main(): Promise<void> {
  const root = document.getElementById('app')!;
  // The folder the Rust side allowed the sidecar to touch (its `--allow-path`).
  const folder = await invoke<string>('example_folder');

  const client = new TaskmillClient({
    transport: new PluginTransport(),
    logger: (line, parsed) => console.debug('[sidecar]', parsed ?? line),
    onError: (err, detail) => console.warn('[taskmill]', err.message, detail?.line ?? ''),
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
