import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  dereferenceDocument,
  parseOpenRPCDocument,
  validateOpenRPCDocument,
} from '@open-rpc/schema-utils-js';
import { describe, expect, it } from 'vitest';
import { generate, OUTPUT, SCHEMAS } from '../../scripts/gen-types.mjs';
import { EVENT_NAMES, METHOD_NAMES } from '../../src/generated.js';

const openrpc = () => JSON.parse(readFileSync(resolve(SCHEMAS, 'openrpc.json'), 'utf8'));

describe('generated types', () => {
  it('src/generated.ts is what `npm run gen` makes from the repository\'s schemas/', async () => {
    const fresh = await generate();
    const committed = readFileSync(OUTPUT, 'utf8');
    // On failure: run `npm run gen` and commit src/generated.ts.
    expect(committed === fresh, 'generated.ts is stale: run `npm run gen`').toBe(true);
  }, 30_000);

  it('covers every method and event of the OpenRPC document', () => {
    const doc = openrpc();
    const requests = doc.methods
      .filter((m: any) => m.result && m['x-direction'] !== 'server-to-client')
      .map((m: any) => m.name);
    const events = doc.methods
      .filter((m: any) => !m.result && m['x-direction'] === 'server-to-client')
      .map((m: any) => m.name);
    expect([...METHOD_NAMES].sort()).toEqual(requests.sort());
    expect([...EVENT_NAMES].sort()).toEqual(events.sort());
    expect(METHOD_NAMES).toContain('task.submit');
    expect(EVENT_NAMES).toContain('task.progress');
  });
});

describe('schemas/openrpc.json', () => {
  it('is a valid OpenRPC document', () => {
    const result = validateOpenRPCDocument(openrpc());
    if (result !== true) throw new Error(result.message);
    expect(result).toBe(true);
  });

  it('parses and dereferences with local references only', async () => {
    const doc = openrpc();
    const parsed = await parseOpenRPCDocument(doc, { dereference: false, validate: true });
    expect(parsed.methods.length).toBe(doc.methods.length);
    const deref = await dereferenceDocument(doc);
    const get = deref.methods.find((m: any) => m.name === 'task.get') as any;
    expect(get.result.schema.properties.state.enum).toContain('running');
  });

  it('the validator does reject a broken document', () => {
    const doc = openrpc();
    doc.methods[0].params = 'not a list';
    expect(validateOpenRPCDocument(doc)).not.toBe(true);
  });
});
