#!/usr/bin/env node
// The package as a user gets it: `npm pack` makes the tarball, a scratch Vite + TypeScript
// project (in a temp dir) installs it, imports `@taskmill/client`, `@taskmill/client/tauri` and
// `@taskmill/client/tauri-shell`, type-checks with `tsc --noEmit` (including lines that must NOT
// type-check) and bundles with `vite build`. Every ```ts block of README.md is type-checked
// there too (each its own module, with the few names it leaves to the reader declared).
//
//   node scripts/pack-check.mjs          (npm run pack:check; uses the npm cache when it can)
//   KEEP=1 node scripts/pack-check.mjs   keeps the scratch project and prints its path
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const PKG = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const pkg = JSON.parse(readFileSync(join(PKG, 'package.json'), 'utf8'));
const devVersion = (name) => pkg.devDependencies[name];

function run(cmd, args, cwd) {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], shell: process.platform === 'win32' });
}

const MAIN_TS = `// A Tauri app's page, as the README shows it.
import { TaskmillClient, TaskmillError, PROTOCOL_VERSION, type TaskInfo } from '@taskmill/client';
import { TauriPluginTransport, PLUGIN_COMMANDS } from '@taskmill/client/tauri';
import { TauriTransport } from '@taskmill/client/tauri-shell';

const client = new TaskmillClient({ transport: new TauriPluginTransport() });
const off: () => void = client.on('task.progress', (p) => {
  const fraction: number | undefined = p.progress.fraction;
  console.log(p.id, fraction);
});
off();

export async function demo(): Promise<TaskInfo> {
  const { id } = await client.invoke('task.submit', { type: 'fs.hash', payload: { path: '/x' } });
  try {
    return await client.invoke('task.get', { id });
  } catch (err) {
    if (err instanceof TaskmillError && err.kind === 'protocolMismatch') throw err;
    throw err;
  }
}

// The page-spawned alternative type-checks too.
export const shell = new TauriTransport({ program: 'binaries/taskmill-sidecar', args: ['--app-id', 'x'] });
export const version: number = PROTOCOL_VERSION;
export const send: 'plugin:taskmill|send' = PLUGIN_COMMANDS.send;

// The types are real, not any: each of these must be refused.
// @ts-expect-error: unknown method
void client.invoke('task.nope', {});
// @ts-expect-error: task.get needs {id: number}
void client.invoke('task.get', { id: 'seven' });
// @ts-expect-error: an unknown event
client.on('task.progres', () => {});
// @ts-expect-error: the client's listen is gone (on replaces it)
client.listen('task.progress', () => {});
`;

/** The names README.md's snippets use without defining them. */
const README_PRELUDE = `declare function render(id: number, fraction?: number): void;
declare const path: string;
declare const bad: boolean;
`;

function readmeBlocks() {
  const text = readFileSync(join(PKG, 'README.md'), 'utf8');
  return [...text.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
}

const dir = mkdtempSync(join(tmpdir(), 'taskmill-pack-check-'));
try {
  const started = Date.now();
  const packed = JSON.parse(run(npm, ['pack', '--json', '--pack-destination', dir], PKG));
  const { filename, files } = packed[0];
  const names = files.map((f) => f.path).sort();
  const stray = names.filter((p) => !p.startsWith('dist/') && !['package.json', 'README.md', 'LICENSE'].includes(p));
  if (stray.length) throw new Error(`the tarball holds files outside dist/: ${stray.join(', ')}`);
  for (const entry of ['dist/index.d.ts', 'dist/tauri.d.ts', 'dist/tauri-shell.d.ts', 'dist/node.d.ts', 'dist/generated.d.ts']) {
    if (!names.includes(entry)) throw new Error(`the tarball lacks ${entry}`);
  }

  const app = join(dir, 'app');
  mkdirSync(join(app, 'src'), { recursive: true });
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify(
      {
        name: 'scratch-tauri-page',
        private: true,
        type: 'module',
        dependencies: {
          '@taskmill/client': `file:${join(dir, filename)}`,
          '@tauri-apps/api': devVersion('@tauri-apps/api'),
          '@tauri-apps/plugin-shell': devVersion('@tauri-apps/plugin-shell'),
        },
        devDependencies: { typescript: devVersion('typescript'), vite: '^8.3.8', '@types/node': devVersion('@types/node') },
      },
      null,
      2,
    ),
  );
  // As `npm create vite` (vanilla-ts) writes it.
  writeFileSync(
    join(app, 'tsconfig.json'),
    JSON.stringify(
      {
        compilerOptions: {
          target: 'ES2022',
          useDefineForClassFields: true,
          module: 'ESNext',
          lib: ['ES2022', 'DOM', 'DOM.Iterable'],
          types: [],
          skipLibCheck: false,
          moduleResolution: 'bundler',
          allowImportingTsExtensions: true,
          verbatimModuleSyntax: true,
          moduleDetection: 'force',
          noEmit: true,
          strict: true,
          noUnusedLocals: true,
          noUnusedParameters: true,
          noFallthroughCasesInSwitch: true,
        },
        include: ['src'],
      },
      null,
      2,
    ),
  );
  writeFileSync(join(app, 'index.html'), '<!doctype html><script type="module" src="/src/main.ts"></script>\n');
  writeFileSync(join(app, 'src', 'main.ts'), MAIN_TS);
  const blocks = readmeBlocks();
  if (blocks.length < 3) throw new Error(`README.md has ${blocks.length} ts blocks; expected the usage and transport examples`);
  mkdirSync(join(app, 'readme'));
  blocks.forEach((code, i) => writeFileSync(join(app, 'readme', `block-${i + 1}.ts`), `${README_PRELUDE}\n${code}\nexport {};\n`));
  writeFileSync(
    join(app, 'readme', 'tsconfig.json'),
    JSON.stringify({ extends: '../tsconfig.json', compilerOptions: { noUnusedLocals: false, noUnusedParameters: false, types: ['node'] }, include: ['.'] }),
  );

  run(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], app);
  const tsc = join(app, 'node_modules', 'typescript', 'bin', 'tsc');
  run(process.execPath, [tsc, '--noEmit', '-p', app], app);
  run(process.execPath, [tsc, '--noEmit', '-p', join(app, 'readme')], app);
  run(process.execPath, [join(app, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--logLevel', 'error'], app);
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`pack-check: ${filename} (${names.length} files) installs, type-checks (with README.md's ${blocks.length} ts blocks) and bundles in a scratch Vite + TS project (${seconds} s)`);
} catch (err) {
  const out = [err.stdout, err.stderr].filter(Boolean).join('\n');
  console.error(`pack-check failed: ${err.message}${out ? `\n${out}` : ''}`);
  process.exitCode = 1;
} finally {
  if (process.env.KEEP) console.log(`kept ${dir}`);
  else rmSync(dir, { recursive: true, force: true });
}
