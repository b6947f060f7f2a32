// src-tauri's configuration, checked without compiling it (the compiled app is tested by
// test/app/app.e2e.ts in .ci/tauri.sh): tauri.conf.json against the config schema that the
// @tauri-apps/cli npm package ships, the capability against that schema's `Capability`
// definition, and the least-privilege rules: no shell permission for the page, no command that
// takes a pid or a path.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { readCapability, SRC_TAURI } from '../helpers/shell-scope.js';

/** The CLI whose schema is used; keep it at the minor of @tauri-apps/api. */
const TAURI_CLI_VERSION = '2.12.5';
const CACHE = resolve(import.meta.dirname, '..', '..', 'node_modules', '.cache', `tauri-cli-${TAURI_CLI_VERSION}`);

/**
 * config.schema.json from the @tauri-apps/cli tarball (`npm pack`, cached under
 * node_modules/.cache): installing the CLI would pull its native binary, which the tests do
 * not need.
 */
function configSchema(): any {
  const file = join(CACHE, 'config.schema.json');
  if (!existsSync(file)) {
    const tmp = mkdtempSync(join(tmpdir(), 'tauri-cli-'));
    try {
      const out = execFileSync(
        'npm',
        ['pack', `@tauri-apps/cli@${TAURI_CLI_VERSION}`, '--json', '--pack-destination', tmp],
        { encoding: 'utf8', shell: process.platform === 'win32' },
      );
      const tarball = join(tmp, JSON.parse(out)[0].filename);
      execFileSync('tar', ['-xzf', tarball, '-C', tmp, 'package/config.schema.json']);
      mkdirSync(CACHE, { recursive: true });
      renameSync(join(tmp, 'package', 'config.schema.json'), file);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }
  return JSON.parse(readFileSync(file, 'utf8'));
}

function ajv(): Ajv {
  // The schema's patterns are Rust/ECMAScript regexes written without the `u` flag in mind
  // (e.g. `[^/\\:*?"<>|]`), so compile them without it.
  const regExp = Object.assign((pattern: string, flags: string) => new RegExp(pattern, flags.replace('u', '')), {
    code: 'new RegExp',
  });
  const a = new Ajv({ allErrors: true, strict: false, code: { regExp } });
  const int = (min: number, max: number) => ({
    type: 'number' as const,
    validate: (n: number) => Number.isInteger(n) && n >= min && n <= max,
  });
  a.addFormat('uint8', int(0, 255));
  a.addFormat('uint32', int(0, 2 ** 32 - 1));
  a.addFormat('int32', int(-(2 ** 31), 2 ** 31 - 1));
  a.addFormat('int64', { type: 'number', validate: Number.isInteger });
  a.addFormat('double', { type: 'number', validate: () => true });
  a.addFormat('uri', (s: string) => URL.canParse(s));
  a.addFormat('uuid', /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
  return a;
}

const json = (rel: string) => JSON.parse(readFileSync(resolve(SRC_TAURI, rel), 'utf8'));
const errors = (v: { errors?: unknown }) => JSON.stringify(v.errors, null, 1);

describe('src-tauri configuration', () => {
  it('tauri.conf.json is valid against the @tauri-apps/cli config schema', () => {
    const schema = configSchema();
    const validate = ajv().compile(schema);
    const conf = json('tauri.conf.json');
    expect(validate(conf), errors(validate)).toBe(true);
    // The schema bites: a misspelt key or a wrong type is refused.
    expect(validate({ ...conf, bundle: { ...conf.bundle, externalBins: conf.bundle.externalBin } })).toBe(false);
    expect(validate({ ...conf, app: { ...conf.app, windows: [{ width: '1280' }] } })).toBe(false);
    expect(conf.bundle.externalBin).toEqual(['binaries/taskmill-sidecar']);
    expect(conf.build.frontendDist).toBe('../dist');
    expect(conf.app.windows).toMatchObject([{ label: 'main', width: 1280, height: 800 }]);
    for (const icon of conf.bundle.icon) expect(existsSync(resolve(SRC_TAURI, icon)), icon).toBe(true);
  }, 60_000);

  it("capabilities/default.json is valid against the schema's Capability definition", () => {
    const schema = configSchema();
    const validate = ajv().compile({ $ref: '#/definitions/Capability', definitions: schema.definitions });
    const { $schema: _editorHint, ...capability } = json('capabilities/default.json');
    expect(validate(capability), errors(validate)).toBe(true);
    expect(capability.windows).toEqual(['*']); // every window talks to the one sidecar
  }, 60_000);

  it('grants the page core:default and taskmill:default only: no shell permission at all', () => {
    const capability = readCapability();
    const ids = capability.permissions.map((p) => (typeof p === 'string' ? p : p.identifier));
    expect(ids.sort()).toEqual(['core:default', 'taskmill:default']);
  });

  it("the plugin's default permission set is exactly allow-send and allow-state", () => {
    const toml = readFileSync(resolve(SRC_TAURI, '..', 'taskmill-tauri', 'permissions', 'default.toml'), 'utf8');
    const list = /^permissions\s*=\s*\[([^\]]*)\]/m.exec(toml)![1]!;
    expect([...list.matchAll(/"([^"]+)"/g)].map((m) => m[1]).sort()).toEqual(['allow-send', 'allow-state']);
    const build = readFileSync(resolve(SRC_TAURI, '..', 'taskmill-tauri', 'build.rs'), 'utf8');
    expect(build).toMatch(/const COMMANDS: &\[&str\] = &\["send", "state"\];/);
  });

  it("the app's own commands take nothing from the page (no pid, no path)", () => {
    const main = readFileSync(resolve(SRC_TAURI, 'src', 'main.rs'), 'utf8');
    expect(main).toMatch(/generate_handler!\[example_folder\]/);
    expect(main).toMatch(/fn example_folder\(app: AppHandle\)/);
    expect(main).not.toMatch(/register_sidecar_pid|sidecar_args/);
    expect(main).toMatch(/#!\[cfg_attr\(not\(debug_assertions\), windows_subsystem = "windows"\)\]/);
    expect(main).toMatch(/\.plugin\(tauri_plugin_shell::init\(\)\)/);
    expect(main).toMatch(/\.plugin\(tauri_plugin_taskmill::Builder::new\(sidecar_options\)\.build\(\)\)/);
  });

  it('the README\'s capability snippet is the capability file', () => {
    const readme = readFileSync(resolve(SRC_TAURI, '..', 'README.md'), 'utf8');
    const snippet = readme.slice(readme.indexOf('The capability (`src-tauri/capabilities/default.json`)'));
    const block = /```json\n([\s\S]*?)```/.exec(snippet)![1]!;
    const { $schema: _s, description: _d, ...capability } = readCapability() as any;
    expect(JSON.parse(block)).toEqual(capability);
  });

  it("the README's Rust and Cargo.toml snippets are lines of the example's files", () => {
    const readme = readFileSync(resolve(SRC_TAURI, '..', 'README.md'), 'utf8');
    const lines = (text: string) => new Set(text.split('\n').map((l) => l.trim()).filter(Boolean));
    const snippet = (lang: string, after: string) =>
      new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(readme.slice(readme.indexOf(after)))![1]!;
    const main = lines(readFileSync(resolve(SRC_TAURI, 'src', 'main.rs'), 'utf8'));
    const rust = [...lines(snippet('rust', '2. **The Rust plugin.**'))];
    expect(rust.length).toBeGreaterThan(20);
    for (const line of rust) expect(main.has(line), line).toBe(true);
    const cargo = lines(readFileSync(resolve(SRC_TAURI, 'Cargo.toml'), 'utf8'));
    for (const line of lines(snippet('toml', '2. **The Rust plugin.**'))) expect(cargo.has(line), line).toBe(true);
  });
});
