// Entry point of the example app. The Rust side (the `taskmill` plugin, src-tauri) has already
// started the sidecar with the arguments it computed; the page reaches it through the plugin
// transport (Tauri's invoke/listen, no shell permission) and shows its tasks. Every window of
// the app talks to the same sidecar this way.
import { invoke } from '@tauri-apps/api/core';
import { TaskmillClient } from '@taskmill/client';
import { TauriPluginTransport } from '@taskmill/client/tauri';
import { App } from './app/app.js';
import { Store } from './app/store.js';

async function main(): Promise<void> {
  const root = document.getElementById('app')!;
  // The folder offered for scanning: the one the Rust side allows the sidecar to touch (its
  // `--allow-path`; the app's own command, which takes nothing). The sidecar enforces it.
  const folder = await invoke<string>('example_folder');

  const client = new TaskmillClient({
    transport: new TauriPluginTransport(),
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
