// package.json as npm and bundlers read it: the version is the project's, every entry point
// is a module of src/ built into dist/, the Tauri packages are optional peers.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const PKG = resolve(import.meta.dirname, '..', '..');
const pkg = JSON.parse(readFileSync(resolve(PKG, 'package.json'), 'utf8'));

describe('package.json', () => {
  it("has the version of the repository's pyproject.toml", () => {
    const pyproject = readFileSync(resolve(PKG, '..', '..', 'pyproject.toml'), 'utf8');
    const version = pyproject.match(/^version = "([^"]+)"/m)?.[1];
    expect(version).toBeDefined();
    expect(pkg.version).toBe(version);
  });

  it('exports the core and each transport, each with its types, from dist/', () => {
    expect(Object.keys(pkg.exports).sort()).toEqual(['.', './node', './package.json', './tauri', './tauri-shell']);
    for (const [entry, target] of Object.entries(pkg.exports)) {
      if (entry === './package.json') continue;
      const { types, default: js } = target as { types: string; default: string };
      expect(js, entry).toMatch(/^\.\/dist\/[a-z-]+\.js$/);
      expect(types, entry).toBe(js.replace(/\.js$/, '.d.ts'));
      const source = js.replace('./dist/', 'src/').replace(/\.js$/, '.ts');
      expect(existsSync(resolve(PKG, source)), `${entry}: ${source}`).toBe(true);
    }
    expect(pkg.types).toBe(pkg.exports['.'].types);
    expect(pkg.type).toBe('module');
    expect(pkg.files).toEqual(['dist']);
  });

  it('has no runtime dependency; @tauri-apps packages are optional peers', () => {
    expect(pkg.dependencies).toBeUndefined();
    expect(Object.keys(pkg.peerDependencies).sort()).toEqual(['@tauri-apps/api', '@tauri-apps/plugin-shell']);
    for (const name of Object.keys(pkg.peerDependencies)) {
      expect(pkg.peerDependenciesMeta[name], name).toEqual({ optional: true });
    }
  });
});
