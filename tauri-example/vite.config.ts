import { defineConfig } from 'vite';

// `tauri dev` loads http://localhost:1420 (tauri.conf.json build.devUrl); `tauri build`
// bundles dist/ (build.frontendDist).
export default defineConfig({
  clearScreen: false,
  server: { port: 1420, strictPort: true },
  build: { outDir: 'dist', emptyOutDir: true, target: 'es2022' },
});
