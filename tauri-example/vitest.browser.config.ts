import { defineConfig } from 'vitest/config';

// `npm run test:browser`: the built app in headless Chromium over a real sidecar (needs
// /usr/bin/chromium, see README). Kept out of `npm test`.
export default defineConfig({
  test: {
    include: ['test/browser/**/*.e2e.ts'],
    testTimeout: 180_000,
    hookTimeout: 90_000,
    fileParallelism: false,
  },
});
