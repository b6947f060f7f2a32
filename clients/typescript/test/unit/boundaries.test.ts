import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as client from '../../src/client.js';
import * as shim from '../../src/index.js';

const src = (f: string) => readFileSync(resolve(import.meta.dirname, '../../src', f), 'utf8');
const imports = (text: string) => [...text.matchAll(/^\s*(?:import|export)[^'"]*from\s+['"]([^'"]+)['"]/gm)].map((m) => m[1]);

/** The client's modules that must run anywhere (the transports are the only platform code). */
const PORTABLE = [
  'client.ts',
  'errors.ts',
  'events.ts',
  'framing.ts',
  'generated.ts',
  'hostexec.ts',
  'index.ts',
  'jsonrpc.ts',
  'supervisor.ts',
  'transport.ts',
];

describe('module boundaries', () => {
  it('the portable modules import neither Tauri nor Node', () => {
    for (const f of PORTABLE) {
      for (const spec of imports(src(f))) expect(spec, `${f} imports ${spec}`).toMatch(/^\.\//);
    }
  });

  it('only the Tauri transports import @tauri-apps, each only its own part', () => {
    expect(imports(src('tauri-shell.ts'))).toContain('@tauri-apps/plugin-shell');
    expect(imports(src('tauri.ts')).filter((s) => s!.startsWith('@tauri-apps')).sort()).toEqual([
      '@tauri-apps/api/core',
      '@tauri-apps/api/webviewWindow',
    ]);
    expect(imports(src('node.ts')).some((s) => s!.startsWith('@tauri-apps'))).toBe(false);
  });

  it('the parts are layered under client.ts, and the JSON-RPC core knows no process', () => {
    for (const f of PORTABLE.filter((f) => f !== 'client.ts' && f !== 'index.ts')) {
      expect(imports(src(f)), f).not.toContain('./client.js');
    }
    for (const spec of imports(src('jsonrpc.ts'))) expect(['./errors.js']).toContain(spec);
    for (const f of ['node.ts', 'tauri.ts', 'tauri-shell.ts']) {
      expect(imports(src(f)), f).toContain('./transport.js');
      expect(imports(src(f)), f).not.toContain('./client.js');
    }
  });
});

describe('public names', () => {
  it('client.ts exports exactly the public values', () => {
    expect(Object.keys(client).sort()).toEqual([
      'CLIENT_ERROR_CODES',
      'ERROR_CODES',
      'EVENT_NAMES',
      'METHOD_NAMES',
      'PROTOCOL_VERSION',
      'TaskCancelledError',
      'TaskError',
      'TaskmillClient',
      'TaskmillError',
    ]);
  });

  it('index.ts adds the framing helpers and nothing else', () => {
    expect(Object.keys(shim).sort()).toEqual(
      [...Object.keys(client), 'LineDecoder', 'TauriLineJoiner'].sort(),
    );
  });
});
