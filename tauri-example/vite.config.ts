import { defineConfig } from 'vite';

// `tauri dev` loads http://localhost:1420 (tauri.conf.json build.devUrl); `tauri build`
// bundles dist/ (build.frontendDist).
export default defineConfig({
  clearScreen: false,
  server: { port: 1420, strictPort: true },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
  // @taskmill/client is a `file:` dependency (a symlink): bundle the app's one copy of
  // @tauri-apps/api, not a second one from the package's own node_modules.
  resolve: { dedupe: ['@tauri-apps/api'] },
});
