import { describe, expect, it } from 'vitest';
import { LineDecoder, TauriLineJoiner } from '../../src/framing.js';

describe('LineDecoder', () => {
  it('splits several lines in one chunk and skips empty lines', () => {
    const d = new LineDecoder();
    expect(d.push('{"a":1}\n\n{"b":2}\n')).toEqual(['{"a":1}', '{"b":2}']);
    expect(d.pending).toBe(0);
  });

  it('joins a line split across chunks, even byte-sized ones', () => {
    const d = new LineDecoder();
    const text = '{"jsonrpc":"2.0","id":1,"result":{"now":1}}\r\n{"x":2}\n';
    const out: string[] = [];
    for (const ch of text) out.push(...d.push(ch));
    expect(out).toEqual(['{"jsonrpc":"2.0","id":1,"result":{"now":1}}', '{"x":2}']);
  });

  it('strips \\r of \\r\\n, also when \\r and \\n arrive in different chunks', () => {
    const d = new LineDecoder();
    expect(d.push('{"a":1}\r')).toEqual([]);
    expect(d.push('\n{"b":2}\r\n')).toEqual(['{"a":1}', '{"b":2}']);
  });

  it('flush returns an unterminated rest', () => {
    const d = new LineDecoder();
    expect(d.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(d.flush()).toEqual(['{"b"']);
    expect(d.flush()).toEqual([]);
  });

  it('drops an overlong line and recovers at the next newline', () => {
    const dropped: number[] = [];
    const d = new LineDecoder(10, (n) => dropped.push(n));
    expect(d.push('0123456789abc')).toEqual([]);
    expect(d.push('more of the same line')).toEqual([]);
    expect(d.push('end\n{"ok":1}\n')).toEqual(['{"ok":1}']);
    expect(dropped).toHaveLength(1);
  });

  it('keeps multi-byte characters intact', () => {
    const d = new LineDecoder();
    expect(d.push('{"m":"é→✓')).toEqual([]);
    expect(d.push('😀"}\n')).toEqual(['{"m":"é→✓😀"}']);
  });
});

describe('TauriLineJoiner', () => {
  const collect = () => {
    const out: string[] = [];
    const j = new TauriLineJoiner((t) => out.push(t));
    return { j, out };
  };

  it('adds the newline Tauri stripped and drops a trailing \\r', () => {
    const { j, out } = collect();
    j.push('{"a":1}');
    j.push('{"b":2}\r');
    expect(out).toEqual(['{"a":1}\n', '{"b":2}\n']);
  });

  it('joins a line delivered in pieces', () => {
    const { j, out } = collect();
    j.push('{"jsonrpc":"2.0",');
    j.push('"method":"task.progress",');
    expect(out).toEqual([]);
    j.push('"params":{}}\r');
    expect(out).toEqual(['{"jsonrpc":"2.0","method":"task.progress","params":{}}\n']);
  });

  it('passes text that cannot start a message straight on', () => {
    const { j, out } = collect();
    j.push('Traceback (most recent call last):');
    j.push('');
    expect(out).toEqual(['Traceback (most recent call last):\n']);
  });

  it('gives up on a fragment when a complete message follows', () => {
    const { j, out } = collect();
    j.push('{"broken":');
    j.push('{"ok":1}');
    expect(out).toEqual(['{"broken":\n{"ok":1}\n']);
  });

  it('passes raw chunks (with newlines) through, after a held fragment', () => {
    const { j, out } = collect();
    j.push('{"a":');
    j.push('1}\n{"b":2}\n{"c"');
    expect(out).toEqual(['{"a":1}\n{"b":2}\n{"c"']);
  });

  it('flush emits a held fragment', () => {
    const { j, out } = collect();
    j.push('{"a":');
    j.flush();
    expect(out).toEqual(['{"a":\n']);
  });
});
