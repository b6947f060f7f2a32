// src-tauri cannot be compiled here (no crates.io), so its configuration is checked instead:
// tauri.conf.json against the config schema that the @tauri-apps/cli npm package ships, the
// capability against that schema's `Capability` definition plus the shell plugin's scope
// shape, the argument validators against the arguments main.rs builds.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Ajv } from 'ajv';
import { describe, expect, it } from 'vitest';
import { checkSidecarArgs, readCapability, spawnScope, SRC_TAURI } from '../helpers/shell-scope.js';

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

/** The shell plugin's scope entry (scope_entry.rs: `name`, `cmd` unless sidecar, `args`). */
const SHELL_SCOPE_ENTRY = {
  type: 'object',
  required: ['name', 'sidecar', 'args'],
  additionalProperties: false,
  properties: {
    name: { type: 'string', minLength: 1 },
    cmd: { type: 'string' },
    sidecar: { const: true },
    args: {
      type: 'array',
      items: {
        anyOf: [
          { type: 'string' },
          {
            type: 'object',
            required: ['validator'],
            additionalProperties: false,
            properties: { validator: { type: 'string' }, raw: { type: 'boolean' } },
          },
        ],
      },
    },
  },
};

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
    expect(capability.windows).toEqual(['main']);
  }, 60_000);

  it('grants spawn for the sidecar only, with validated arguments, plus stdin-write and kill', () => {
    const capability = readCapability();
    const ids = capability.permissions.map((p) => (typeof p === 'string' ? p : p.identifier));
    expect(ids.sort()).toEqual(['core:default', 'shell:allow-kill', 'shell:allow-spawn', 'shell:allow-stdin-write']);
    const scope = spawnScope(capability);
    const validate = ajv().compile(SHELL_SCOPE_ENTRY);
    expect(scope).toHaveLength(1);
    expect(validate(scope[0]), errors(validate)).toBe(true);
    expect(scope[0]).toMatchObject({ name: 'binaries/taskmill-sidecar', sidecar: true });
    // Every value is validated: no `args: true`, no raw (unanchored) validator.
    for (const arg of scope[0]!.args as unknown[]) {
      if (typeof arg !== 'string') expect(arg).not.toHaveProperty('raw');
    }
  });

  it('the validators accept what main.rs passes and refuse anything else', () => {
    const ok = (args: string[]) => expect(checkSidecarArgs('binaries/taskmill-sidecar', args)).toBeNull();
    const refused = (args: string[]) =>
      expect(checkSidecarArgs('binaries/taskmill-sidecar', args)).not.toBeNull();
    const linux = ['--parent-pid', '4242', '--db', '/home/ann/.local/share/dev.taskmill.example/tasks.db',
      '--allow-path', '/home/ann/Pictures', '--log-level', 'info',
      '--log-file', '/home/ann/.local/share/dev.taskmill.example/logs/sidecar.log'];
    const windows = ['--parent-pid', '17', '--db', 'C:\\Users\\Ann Lee\\AppData\\Roaming\\dev.taskmill.example\\tasks.db',
      '--allow-path', 'C:\\Users\\Ann Lee\\Pictures', '--log-level', 'info',
      '--log-file', 'C:\\Users\\Ann Lee\\AppData\\Local\\dev.taskmill.example\\logs\\sidecar.log'];
    const macos = ['--parent-pid', '901', '--db', '/Users/ann/Library/Application Support/dev.taskmill.example/tasks.db',
      '--allow-path', '/Users/ann/Pictures', '--log-level', 'warning',
      '--log-file', '/Users/ann/Library/Logs/dev.taskmill.example/sidecar.log'];
    ok(linux);
    ok(windows);
    ok(macos);
    const swap = (i: number, v: string) => linux.map((a, j) => (j === i ? v : a));
    refused(swap(1, '42 --allow-program sh'));
    refused(swap(1, ''));
    refused(swap(3, 'tasks.db')); // relative
    refused(swap(3, '/etc/passwd'));
    refused(swap(5, 'Pictures')); // relative
    refused(swap(5, '/')); // the whole disk
    refused(swap(5, '/home/ann\n--allow-program'));
    refused(swap(7, 'trace'));
    refused(swap(9, 'sidecar.log')); // relative
    refused(swap(9, '/home/ann/.bashrc')); // not a .log file
    refused(swap(6, '--allow-program'));
    refused([...linux, '--allow-program', '/bin/sh']);
    refused(linux.slice(0, 6));
    expect(checkSidecarArgs('binaries/other', linux)).toMatch(/not found/);
  });

  it('main.rs builds the flags in the order of the capability', () => {
    const main = readFileSync(resolve(SRC_TAURI, 'src', 'main.rs'), 'utf8');
    const body = main.slice(main.indexOf('fn sidecar_args'), main.indexOf('fn register_sidecar_pid'));
    const flags = [...body.matchAll(/"(--[a-z-]+)"\.into\(\)/g)].map((m) => m[1]);
    const fixed = (spawnScope()[0]!.args as unknown[]).filter((a) => typeof a === 'string');
    expect(flags).toEqual(fixed);
    expect(main).toMatch(/#!\[cfg_attr\(not\(debug_assertions\), windows_subsystem = "windows"\)\]/);
    expect(main).toMatch(/\.plugin\(tauri_plugin_shell::init\(\)\)/);
    expect(main).toMatch(/RunEvent::Exit/);
    expect(main).toMatch(/generate_handler!\[sidecar_args, register_sidecar_pid\]/);
  });

  it('the README\'s capability snippet is the capability file', () => {
    const readme = readFileSync(resolve(SRC_TAURI, '..', 'README.md'), 'utf8');
    const snippet = readme.slice(readme.indexOf('3. **The capability**'));
    const block = /```json\n([\s\S]*?)```/.exec(snippet)![1]!;
    const { $schema: _s, description: _d, ...capability } = readCapability() as any;
    expect(JSON.parse(block)).toEqual(capability);
  });
});
