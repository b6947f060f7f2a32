// README.md's "Install the client" block is what this example really does: the dependencies
// are package.json's, and the TypeScript is taken from src/main.ts.
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const here = (f: string) => readFileSync(resolve(import.meta.dirname, '..', '..', f), 'utf8');

function section(title: string): string {
  const text = here('README.md');
  const start = text.indexOf(`## ${title}\n`);
  expect(start, `README.md has a "## ${title}" section`).toBeGreaterThanOrEqual(0);
  const end = text.indexOf('\n## ', start + 1);
  return text.slice(start, end < 0 ? undefined : end);
}

const block = (text: string, lang: string) => {
  const m = text.match(new RegExp('```' + lang + '\\n([\\s\\S]*?)```'));
  expect(m, `a ${lang} block`).not.toBeNull();
  return m![1]!;
};

describe('README.md, Install the client', () => {
  it('shows the dependencies package.json has', () => {
    const shown = JSON.parse(`{${block(section('Install the client'), 'json')}}`).dependencies;
    expect(shown).toEqual(JSON.parse(here('package.json')).dependencies);
  });

  it("shows src/main.ts's imports and client construction as they are", () => {
    const main = here('src/main.ts');
    const code = block(section('Install the client'), 'ts');
    const taken = code
      .split('\n')
      .filter((l) => /^import |TaskmillClient\(|TauriPluginTransport\(|onError:|example_folder/.test(l.trim()))
      .map((l) => l.replace(/\s*\/\/.*$/, '').trim());
    expect(taken.length).toBeGreaterThanOrEqual(6);
    for (const line of taken) expect(main, line).toContain(line);
  });
});
