#!/usr/bin/env node
// Generates src/generated.ts from ../schemas/ (never edit generated.ts by hand).
//
//   npm run gen            write src/generated.ts
//   npm run gen -- --check exit 1 when the committed file differs from a fresh generation
//
// * Every shared type ($defs of taskmill.schema.json) becomes an interface/type through
//   json-schema-to-typescript.
// * Every method of openrpc.json gets its params type: the $def with exactly the same fields
//   (e.g. task.get -> TaskIdParams, task.submit -> TaskSpec), else a synthesized `XxxParams`.
// * Maps keyed by wire name: `Methods` (client -> sidecar requests: params + result),
//   `Events` (sidecar -> client notifications: params), `ClientNotifications`
//   (executor.progress / executor.checkpoint) and `ServerRequests` (task.execute).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { compile } from 'json-schema-to-typescript';

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, '..');
export const SCHEMAS = resolve(ROOT, '..', '..', 'schemas');
export const OUTPUT = resolve(ROOT, 'src', 'generated.ts');

const ANNOTATIONS = new Set(['default', 'description', 'title', 'examples', 'deprecated']);

/** Deep copy with `#/components/schemas/X` refs rewritten to `#/$defs/X`. */
function rewriteRefs(node) {
  if (Array.isArray(node)) return node.map(rewriteRefs);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    out[k] =
      k === '$ref' && typeof v === 'string'
        ? v.replace('#/components/schemas/', '#/$defs/')
        : rewriteRefs(v);
  }
  return out;
}

/** `{default: null}` (any JSON value) must be `unknown`, not an object type. */
function markAnyValues(node) {
  if (Array.isArray(node)) return node.map(markAnyValues);
  if (node === null || typeof node !== 'object') return node;
  const out = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'properties' && v && typeof v === 'object') {
      out[k] = Object.fromEntries(
        Object.entries(v).map(([name, s]) => [name, markAnyValues(s)]),
      );
    } else if (k === 'default' || k === 'enum' || k === 'const') {
      out[k] = v;
    } else {
      out[k] = markAnyValues(v);
    }
  }
  const keys = Object.keys(out);
  if (keys.length > 0 && keys.every((k) => ANNOTATIONS.has(k))) out.tsType = 'unknown';
  return out;
}

function pascal(name) {
  return name
    .split(/[.\-_:]/)
    .filter(Boolean)
    .map((p) => p[0].toUpperCase() + p.slice(1))
    .join('');
}

/** The object schema that a by-name params list describes. */
function paramsSchema(method) {
  const properties = {};
  const required = [];
  for (const p of method.params ?? []) {
    properties[p.name] = rewriteRefs(p.schema ?? {});
    if (p.required) required.push(p.name);
  }
  return { type: 'object', additionalProperties: false, properties, required };
}

/** The $def whose fields are exactly the method's params (ties: the best-named one). */
function matchDef(method, defs) {
  const want = paramsSchema(method);
  const hits = Object.entries(defs)
    .filter(
      ([, d]) =>
        isDeepStrictEqual(d.properties ?? {}, want.properties) &&
        isDeepStrictEqual([...(d.required ?? [])].sort(), [...want.required].sort()),
    )
    .map(([name]) => name);
  if (hits.length === 0) return null;
  const full = pascal(method.name);
  const last = pascal(method.name.split('.').pop());
  const score = (n) =>
    n === full ? 0 : n === `${full}Params` ? 1 : n.endsWith(`${last}Params`) ? 2 : 3;
  return hits.sort((a, b) => score(a) - score(b) || a.localeCompare(b))[0];
}

function resultType(method, defs, extra) {
  const schema = method.result?.schema;
  if (!schema) return 'void';
  const ref = typeof schema.$ref === 'string' ? schema.$ref.split('/').pop() : null;
  if (ref && defs[ref]) return ref;
  const name = `${pascal(method.name)}Result`;
  const s = rewriteRefs(schema);
  if (s.type === 'object' && !s.properties && s.additionalProperties === undefined) {
    s.additionalProperties = true;
  }
  extra[name] = { ...s, title: name };
  return name;
}

const quote = (s) => `'${s}'`;

export async function generate() {
  const shared = JSON.parse(readFileSync(resolve(SCHEMAS, 'taskmill.schema.json'), 'utf8'));
  const doc = JSON.parse(readFileSync(resolve(SCHEMAS, 'openrpc.json'), 'utf8'));
  const defs = shared.$defs;
  for (const name of Object.keys(doc.components?.schemas ?? {})) {
    if (!defs[name]) throw new Error(`openrpc.json component ${name} missing from taskmill.schema.json`);
  }

  const extra = {}; // synthesized definitions
  const methods = []; // [name, paramsType, resultType]
  const events = []; // [name, paramsType]
  const clientNotifications = [];
  const serverRequests = [];
  for (const m of doc.methods) {
    let params = matchDef(m, defs);
    if (!params) {
      params = `${pascal(m.name)}Params`;
      extra[params] = { ...paramsSchema(m), title: params };
    }
    const toClient = m['x-direction'] === 'server-to-client';
    const hasResult = Boolean(m.result);
    if (toClient && hasResult) serverRequests.push([m.name, params, resultType(m, defs, extra)]);
    else if (toClient) events.push([m.name, params]);
    else if (hasResult) methods.push([m.name, params, resultType(m, defs, extra)]);
    else clientNotifications.push([m.name, params]);
  }

  const allDefs = markAnyValues({ ...defs, ...extra });
  const root = {
    title: 'TaskmillGeneratedRoot',
    type: 'object',
    additionalProperties: false,
    properties: {},
    $defs: allDefs,
  };
  let types = await compile(root, 'TaskmillGeneratedRoot', {
    bannerComment: '',
    unreachableDefinitions: true,
    additionalProperties: false,
    strictIndexSignatures: false,
    format: true,
    style: { singleQuote: true, printWidth: 100 },
  });
  types = types
    .replace(/^export interface TaskmillGeneratedRoot \{\}\n/m, '')
    .replace(
      /\n? \*\n \* This (?:interface|type) was referenced by `TaskmillGeneratedRoot`'s JSON-Schema\n \* via the `definition` "[^"]+"\.\n/g,
      '\n',
    )
    .replace(
      /\/\*\*\n \* This (?:interface|type) was referenced by `TaskmillGeneratedRoot`'s JSON-Schema\n \* via the `definition` "[^"]+"\.\n \*\/\n/g,
      '',
    );

  const errors = Object.entries(doc.components?.errors ?? {})
    .map(([kind, e]) => [kind, e.code])
    .sort((a, b) => b[1] - a[1]);

  const lines = [];
  lines.push(
    '/* eslint-disable */',
    '// GENERATED by scripts/gen-types.mjs from the repository\'s schemas/taskmill.schema.json and',
    '// schemas/openrpc.json. Do not edit: run `npm run gen` (`npm test` checks it is current).',
    '',
    types.trimEnd(),
    '',
    '/** What `task.submit` takes (PROTOCOL.md calls it `SubmitParams`). */',
    'export type SubmitParams = TaskSpec;',
    '',
    `/** The OpenRPC document's \`info.version\`. */`,
    `export const SCHEMA_VERSION = ${quote(doc.info.version)};`,
    `/** The wire protocol version (\`sidecar.ready.protocolVersion\`). */`,
    `export const PROTOCOL_VERSION = ${doc.info['x-protocol-version'] ?? 1};`,
    '',
    '/** Client → sidecar requests: wire name → params and result. */',
    'export interface Methods {',
    ...methods.map(([n, p, r]) => `  ${quote(n)}: { params: ${p}; result: ${r} };`),
    '}',
    '',
    '/** Sidecar → client notifications (events): wire name → params. */',
    'export interface Events {',
    ...events.map(([n, p]) => `  ${quote(n)}: ${p};`),
    '}',
    '',
    '/** Client → sidecar notifications (host executors): wire name → params. */',
    'export interface ClientNotifications {',
    ...clientNotifications.map(([n, p]) => `  ${quote(n)}: ${p};`),
    '}',
    '',
    '/** Sidecar → client requests (host executors): wire name → params and result. */',
    'export interface ServerRequests {',
    ...serverRequests.map(([n, p, r]) => `  ${quote(n)}: { params: ${p}; result: ${r} };`),
    '}',
    '',
    'export type Method = keyof Methods;',
    'export type EventName = keyof Events;',
    "export type MethodParams<M extends Method> = Methods[M]['params'];",
    "export type MethodResult<M extends Method> = Methods[M]['result'];",
    'export type EventParams<E extends EventName> = Events[E];',
    '',
    'export const METHOD_NAMES = [',
    ...methods.map(([n]) => `  ${quote(n)},`),
    '] as const satisfies readonly Method[];',
    '',
    'export const EVENT_NAMES = [',
    ...events.map(([n]) => `  ${quote(n)},`),
    '] as const satisfies readonly EventName[];',
    '',
    '/** Error codes by `data.kind` (components.errors of the OpenRPC document). */',
    'export const ERROR_CODES = {',
    ...errors.map(([k, c]) => `  ${k}: ${c},`),
    '} as const;',
    'export type ErrorKind = keyof typeof ERROR_CODES;',
    '',
  );
  return lines.join('\n');
}

const isMain = process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url);
if (isMain) {
  const fresh = await generate();
  if (process.argv.includes('--check')) {
    let current = '';
    try {
      current = readFileSync(OUTPUT, 'utf8');
    } catch {}
    if (current !== fresh) {
      console.error(`${OUTPUT} is stale: run \`npm run gen\` and commit it`);
      process.exit(1);
    }
    console.log('generated.ts is current');
  } else {
    writeFileSync(OUTPUT, fresh);
    console.log(`wrote ${OUTPUT}`);
  }
}
