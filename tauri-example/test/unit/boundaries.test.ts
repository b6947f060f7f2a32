import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const src = (f: string) => readFileSync(resolve(import.meta.dirname, '../../src/taskmill', f), 'utf8');
const imports = (text: string) => [...text.matchAll(/^\s*(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]);

describe('module boundaries', () => {
  it('client.ts, framing.ts, generated.ts and index.ts import neither Tauri nor Node', () => {
    for (const f of ['client.ts', 'framing.ts', 'generated.ts', 'index.ts']) {
      for (const spec of imports(src(f))) expect(spec, `${f} imports ${spec}`).toMatch(/^\.\//);
    }
  });

  it('only transport-tauri.ts imports @tauri-apps', () => {
    expect(imports(src('transport-tauri.ts'))).toContain('@tauri-apps/plugin-shell');
    expect(imports(src('transport-node.ts')).some((s) => s!.startsWith('@tauri-apps'))).toBe(false);
  });
});
