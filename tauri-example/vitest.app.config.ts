import { defineConfig } from 'vitest/config';

// `npm run test:app`: the compiled Tauri app under Xvfb with tauri-driver + WebKitWebDriver
// (see test/app/app.e2e.ts and ../.ci/tauri.sh). Kept out of `npm test`.
export default defineConfig({
  test: {
    include: ['test/app/**/*.e2e.ts'],
    testTimeout: 300_000,
    hookTimeout: 60_000,
    fileParallelism: false,
  },
});
