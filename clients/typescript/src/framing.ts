// Newline-delimited framing helpers (no dependencies; shared by the client and the transports).

/**
 * Splits a stream of text chunks into lines: a chunk may hold part of a line, one line or
 * several; `\r\n` and `\n` both end a line; empty lines are skipped. A line longer than
 * `maxLineChars` is dropped (reported through `onOverflow`) so memory stays bounded.
 */
export class LineDecoder {
  private buf = '';
  private skipping = false;

  constructor(
    private readonly maxLineChars = 64 * 1024 * 1024,
    private readonly onOverflow?: (droppedChars: number) => void,
  ) {}

  /** Feeds a chunk; returns the complete lines it finished (without terminators). */
  push(chunk: string): string[] {
    const out: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf('\n', start);
      if (nl < 0) break;
      const piece = chunk.slice(start, nl);
      start = nl + 1;
      if (this.skipping) {
        this.skipping = false;
        this.buf = '';
        continue;
      }
      const line = stripCr(this.buf + piece);
      this.buf = '';
      if (line.length > 0) out.push(line);
    }
    if (start < chunk.length && !this.skipping) {
      this.buf += chunk.slice(start);
      if (this.buf.length > this.maxLineChars) {
        this.onOverflow?.(this.buf.length);
        this.buf = '';
        this.skipping = true;
      }
    }
    return out;
  }

  /** The unterminated rest (end of stream), if any, as a last line. */
  flush(): string[] {
    const rest = this.skipping ? '' : stripCr(this.buf);
    this.buf = '';
    this.skipping = false;
    return rest.length > 0 ? [rest] : [];
  }

  /** Chars buffered for the unfinished line. */
  get pending(): number {
    return this.buf.length;
  }
}

function stripCr(s: string): string {
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Turns the Tauri shell plugin's stdout events back into newline-terminated text.
 *
 * In its default (line) mode Tauri delivers one event per line with the `\n` removed (a `\r`
 * may remain). Should a line ever arrive in pieces, the pieces are joined until they form a
 * complete JSON value; a piece that cannot start a JSON message, or a fragment followed by a
 * complete message, is passed on as its own line (the client then reports it as not JSON).
 * Events that already carry `\n` (raw mode) are passed through unchanged.
 */
export class TauriLineJoiner {
  private pending = '';

  constructor(
    private readonly emit: (text: string) => void,
    private readonly maxPendingChars = 64 * 1024 * 1024,
  ) {}

  push(data: string): void {
    if (data.includes('\n')) {
      // Raw chunk(s): the client's LineDecoder frames them; keep a held fragment in front.
      const held = this.pending;
      this.pending = '';
      this.emit(held + data);
      return;
    }
    const piece = stripCr(data);
    if (this.pending === '') {
      if (piece.trim() === '') return;
      if (isJson(piece) || !/^\s*[[{]/.test(piece)) {
        this.emit(piece + '\n');
        return;
      }
      this.hold(piece);
      return;
    }
    const joined = this.pending + piece;
    if (isJson(joined)) {
      this.pending = '';
      this.emit(joined + '\n');
    } else if (isJson(piece)) {
      const stale = this.pending;
      this.pending = '';
      this.emit(stale + '\n' + piece + '\n');
    } else {
      this.pending = '';
      this.hold(joined);
    }
  }

  /** End of stream: pass on whatever is held. */
  flush(): void {
    if (this.pending !== '') {
      const rest = this.pending;
      this.pending = '';
      this.emit(rest + '\n');
    }
  }

  private hold(fragment: string): void {
    if (fragment.length > this.maxPendingChars) {
      this.emit(fragment + '\n');
    } else {
      this.pending = fragment;
    }
  }
}
